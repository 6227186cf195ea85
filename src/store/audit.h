/*
 * store/audit.h - the audit trail and whole-database copies: part of the store's public
 * interface (store.h includes it; the contracts of store.h apply).
 *
 * Audit trail: an append-only list of events, each appended by the write transaction
 * that makes the change it describes (kw_store_tx_audit_append), so an event exists if and
 * only if its change committed. Events are numbered 1, 2, 3 ... (seq, gapless) and
 * hash-chained: hash = SHA-256 of the event's canonical encoding (kw_audit_hash), which
 * includes the previous event's hash (32 zero bytes before the first). The chain head
 * (the last seq and its hash) is a row of its own, updated in the same transaction, so
 * cutting events off the end is detected like editing, deleting or reordering one
 * (kw_store_audit_verify). Appends are serialized by the store's global write order
 * (tag-kw-store-write-order) and, on PostgreSQL, by the head row's lock as well: two
 * instances never append on top of the same head.
 *
 * What the chain proves: that the events were not changed by someone who did not also
 * recompute every later hash and the head. It is not a signature: whoever can write the
 * database and knows the encoding can rewrite history. Keep the head hash that
 * `keyward audit verify` prints somewhere else to anchor it.
 *
 * Copies (kw_store_dump, kw_store_import_*): every row (meta, agents, keys with their
 * hashes and sealed secrets as stored, relationships, audit events) plus the revision
 * and the audit head, read from one snapshot and written in one transaction into an
 * EMPTY store of either backend (`keyward migrate`).
 *
 * Ownership: strings of events handed to callbacks are valid during the callback only;
 *   events from kw_store_audit_list are allocated from the caller's arena. Strings given
 *   to append and import are borrowed for the call.
 * Threads: as store.h (an import belongs to one thread, like a tx).
 * Errors: KW_OK or a negative KW_E* (KW_EDB, KW_ENOMEM, KW_EINVAL); diag may be NULL.
 */
#ifndef KW_STORE_AUDIT_H
#define KW_STORE_AUDIT_H

#define KW_AUDIT_HASH_LEN 32
/* Caps on an event's fields (bytes); longer input is refused with KW_EINVAL. A field holds
 * at least an object "type:id" of the longest names and ids (base/limits.h); callers keep
 * details under KW_AUDIT_DETAIL_MAX (the api lists a write's updates up to a budget). */
#define KW_AUDIT_FIELD_MAX 2048
#define KW_AUDIT_DETAIL_MAX 65536
_Static_assert(KW_AUDIT_FIELD_MAX > KW_MAX_NAME_LEN + 1 + KW_MAX_OBJECT_ID_LEN,
               "an event's resource holds any object");

typedef struct kw_audit_event {
    int64_t seq;            /* 1, 2, 3 ... assigned by append */
    int64_t at_us;          /* when, microseconds since the Unix epoch (the caller's clock) */
    kw_revision_t revision; /* the store revision of the transaction that appended it */
    kw_str_t actor;         /* "user:alice", "agent:<id>"; never a secret */
    kw_str_t action;        /* "agent.create", "key.delete", "relationships.write" ... */
    kw_str_t resource;      /* "agent:<id>", "agent_api_key:<id>", "schema", ... */
    kw_str_t account;       /* the account the resource belongs to; "" for none (/v1) */
    kw_str_t request_id;    /* the HTTP request's X-Request-Id */
    kw_str_t detail;        /* what changed: a JSON object, never a secret */
    uint8_t prev_hash[KW_AUDIT_HASH_LEN];
    uint8_t hash[KW_AUDIT_HASH_LEN];
} kw_audit_event_t;

typedef struct kw_audit_head {
    int64_t seq; /* the last event's (0: no event) */
    uint8_t hash[KW_AUDIT_HASH_LEN];
} kw_audit_head_t;

/* The canonical hash of ev: SHA-256 over "keyward-audit-1", seq, at_us, revision (8 bytes
 * big-endian each), the six strings (each a 4-byte big-endian length, then its bytes) and
 * prev_hash. ev->hash is not read. */
void kw_audit_hash(const kw_audit_event_t *ev, uint8_t out[KW_AUDIT_HASH_LEN]);

/* Appends ev inside tx, after the change it describes: seq, revision, prev_hash and hash
 * are assigned and written back into *ev. at_us and the six strings are the caller's
 * (empty strings allowed, except action and resource; detail "" is stored as "{}").
 * KW_EINVAL (a field over its cap, not UTF-8, or missing): nothing appended, the tx stays
 * usable. Any other failure fails the tx (store.h: sticky failure). */
KW_NODISCARD int kw_store_tx_audit_append(kw_store_tx_t *tx, kw_audit_event_t *ev, kw_diag_t *diag);

/* Sets meta `key` inside tx (it commits or rolls back with it), e.g. the schema text
 * together with its audit event. */
KW_NODISCARD int kw_store_tx_meta_set(kw_store_tx_t *tx, const char *key, kw_str_t val);

/* Which events kw_store_audit_list returns. Zeroed: all of them. */
typedef struct kw_audit_filter {
    bool by_account;                  /* only events whose account equals `account` */
    kw_str_t account;                 /* ("" selects the events of no account) */
    kw_str_t resource, actor, action; /* exact matches; len 0 = any */
    int64_t since_us;                 /* at_us >= since_us (0: no bound) */
    int64_t until_us;                 /* at_us < until_us (0: no bound) */
} kw_audit_filter_t;

/* Up to `limit` (1..1000) events matching f with seq > after_seq, in seq order, from `a`. */
KW_NODISCARD int kw_store_audit_list(kw_store_t *s, const kw_audit_filter_t *f, int64_t after_seq,
                                     size_t limit, kw_arena_t *a, kw_audit_event_t **out,
                                     size_t *n_out);

/* Every event in seq order, from one snapshot, then *head (may be NULL) gets the stored
 * chain head of that snapshot. cb returns non-zero to stop (that value is returned). */
typedef int (*kw_audit_cb)(const kw_audit_event_t *ev, void *ud);
KW_NODISCARD int kw_store_audit_scan(kw_store_t *s, kw_audit_cb cb, void *ud,
                                     kw_audit_head_t *head);

/* What kw_store_audit_verify found. */
typedef struct kw_audit_report {
    int64_t n_events;
    int64_t bad_seq; /* the first bad event (the seq expected there); 0 when intact */
    char why[200];   /* for a broken chain: what is wrong with event bad_seq */
    kw_audit_head_t head;
} kw_audit_report_t;

/* Recomputes the whole chain from one snapshot. KW_OK: intact (rep->head is the head);
 * KW_ECONFLICT: broken, rep->bad_seq and rep->why name the first bad event (an edited
 * event, a hash that does not follow its predecessor, a missing, repeated or reordered
 * seq, or a head that does not match the last event); KW_EDB/KW_ENOMEM: could not read. */
KW_NODISCARD int kw_store_audit_verify(kw_store_t *s, kw_audit_report_t *rep, kw_diag_t *diag);

/* ---- whole-database copies ---- */

typedef struct kw_store_counts {
    uint64_t meta; /* meta rows besides the revision */
    uint64_t agents, keys, relationships, audit_events;
    kw_revision_t revision;
} kw_store_counts_t;

/* Row counts and the revision, from one snapshot. */
KW_NODISCARD int kw_store_counts(kw_store_t *s, kw_store_counts_t *out);

/* Receives a dump, row by row; every callback returns KW_OK or an error that stops it. */
typedef struct kw_store_sink {
    int (*meta)(void *ud, kw_str_t key, kw_str_t val);
    int (*agent)(void *ud, const kw_agent_t *ag);
    int (*key)(void *ud, const kw_apikey_t *k);
    int (*rel)(void *ud, const kw_rel_t *rel);
    int (*audit)(void *ud, const kw_audit_event_t *ev);
} kw_store_sink_t;

/* Streams every row from ONE snapshot, in this order: meta, agents, keys, relationships,
 * audit events (seq order); then *counts gets what was streamed and the snapshot's
 * revision, and *head its audit head. Strings are valid during each callback only. */
KW_NODISCARD int kw_store_dump(kw_store_t *s, const kw_store_sink_t *sink, void *ud,
                               kw_store_counts_t *counts, kw_audit_head_t *head, kw_diag_t *diag);

/* An import: one write transaction into an empty store. begin refuses (KW_ECONFLICT,
 * nothing changed) a store that holds any agent, key, relationship, audit event, meta row
 * or a revision above 0. Rows are written as given (no relationship change is recorded,
 * no revision bumped per row). commit sets the revision and the audit head (on
 * PostgreSQL also the changelog horizon, to the revision: no follower can have applied
 * anything older) and commits; on any failure nothing is written. abort rolls back. Both
 * free imp. */
typedef struct kw_store_import kw_store_import_t;
KW_NODISCARD int kw_store_import_begin(kw_store_t *s, kw_store_import_t **imp, kw_diag_t *diag);
KW_NODISCARD int kw_store_import_meta(kw_store_import_t *imp, kw_str_t key, kw_str_t val);
KW_NODISCARD int kw_store_import_agent(kw_store_import_t *imp, const kw_agent_t *ag);
KW_NODISCARD int kw_store_import_key(kw_store_import_t *imp, const kw_apikey_t *k);
KW_NODISCARD int kw_store_import_rel(kw_store_import_t *imp, const kw_rel_t *rel);
KW_NODISCARD int kw_store_import_audit(kw_store_import_t *imp, const kw_audit_event_t *ev);
KW_NODISCARD int kw_store_import_commit(kw_store_import_t *imp, kw_revision_t rev,
                                        const kw_audit_head_t *head, kw_diag_t *diag);
void kw_store_import_abort(kw_store_import_t *imp);

/* A consistent copy of the live SQLite database at `src_path` into the NEW file `dst_path`
 * (created mode 0600; an existing file is refused with KW_EEXISTS), made with SQLite's
 * online backup API in one step, so it is the state of one committed transaction while
 * writers go on. The copy is checked (PRAGMA quick_check) before returning. *pages (may be
 * NULL) gets its size in pages. On failure the new file is removed. */
KW_NODISCARD int kw_store_sqlite_backup(const char *src_path, const char *dst_path, int *pages,
                                        kw_diag_t *diag);

#endif
