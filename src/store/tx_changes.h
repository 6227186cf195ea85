/*
 * store/tx_changes.h - the change list a write transaction records: every relationship
 * change it made, in order, reported to the caller after commit (kw_store_tx_changes) and
 * written to PostgreSQL's changelog (pg_changes.c).
 *
 * Below both backends and store.c: the backends record into it (sqlite_tx.c, pg_tx.c),
 * store.c reads and truncates it (kw_store_tx_changes, savepoints), and it calls neither.
 *
 * What a change carries: a TOUCH the whole relationship, its caveat name, caveat context
 * and expiry included (what was written, so the engine and the changelog get exactly that);
 * a DELETE only the relationship's six key strings (caveat, context and expiry empty): a
 * delete removes the relationship whatever its caveat, and nothing downstream reads them.
 *
 * Ownership: the strings of a recorded change are copied into an arena owned by the list;
 *   ups[] and the strings stay valid until kw__store_changes_fini. Truncating keeps the
 *   dropped strings in the arena until then.
 * Threads: a list belongs to one transaction, so to one thread.
 * Errors: kw__store_changes_record returns KW_OK or KW_ENOMEM (the list is unchanged).
 */
#ifndef KW_STORE_TX_CHANGES_H
#define KW_STORE_TX_CHANGES_H

#include "authz/authz.h"
#include "base/base.h"

typedef struct kw__store_changes {
    kw_update_t *ups; /* strings in `strs` */
    size_t n;
    size_t cap;
    kw_arena_t *strs; /* made on the first recorded change */
} kw__store_changes_t;

/* An empty list (no allocation until the first record). */
void kw__store_changes_init(kw__store_changes_t *ch);
/* Frees ups[] and every string; the list is empty again. */
void kw__store_changes_fini(kw__store_changes_t *ch);
/* Appends a change, copying its strings: for KW_OP_DELETE the six key strings only
 * (resource type, id, relation, subject type, id, relation), for any other op also the
 * caveat name, the caveat context and the expiry. */
KW_NODISCARD int kw__store_changes_record(kw__store_changes_t *ch, kw_op_t op, const kw_rel_t *rel);
/* Drops the last recorded change (no-op on an empty list). */
void kw__store_changes_unrecord(kw__store_changes_t *ch);
/* Cuts the list back to its first n changes (n <= its length). */
void kw__store_changes_truncate(kw__store_changes_t *ch, size_t n);

#endif
