/*
 * base/limits.h - every hard cap in keyward, in one place.
 */
#ifndef KW_BASE_LIMITS_H
#define KW_BASE_LIMITS_H

/* Check: nested dispatches before KW_EDEPTH (SpiceDB's default max depth). */
#define KW_MAX_CHECK_DEPTH 50
/* Query budgets (KW_EBUDGET), for the queries whose work can outgrow their answer. A
 * query past its budget stops with KW_EBUDGET instead of growing (tag-kw-query-budget).
 * Check: (object, relation) evaluations of one Check, or paths of its schema-only walk
 * for an object without relationships; each CheckBulk item and each candidate a lookup
 * verifies has its own. A memoized Check visits a reachable pair about once, so this is
 * far above what an acyclic graph needs; it stops the work that results depending on an
 * open cycle redo (exponential in the worst case). */
#define KW_MAX_CHECK_STEPS 1000000u
/* LookupResources / LookupSubjects: (object, relation) pairs walked plus the check steps
 * of every candidate verified, for the whole query. */
#define KW_MAX_LOOKUP_STEPS 20000000u
/* Expand: nodes of the answer tree plus the subjects its leaves list, and the bytes the
 * answer holds (nodes, subject arrays, copied strings). */
#define KW_MAX_EXPAND_NODES 100000u
#define KW_MAX_EXPAND_BYTES (16u * 1024u * 1024u)
/* A debug trace (CheckPermission withTracing): the (object, relation) nodes of one trace,
 * each evaluated by a Check and an Expand of its own, so the work is bounded too. */
#define KW_MAX_TRACE_NODES 10000u
/* Schema text accepted by the parser, in bytes. */
#define KW_MAX_SCHEMA_BYTES (4u * 1024u * 1024u)
/* Identifier lengths (SpiceDB: type/relation names <= 64, object ids <= 1024). */
#define KW_MAX_NAME_LEN 128
#define KW_MAX_OBJECT_ID_LEN 1024
/* Definitions per schema and relations/permissions per definition (indices are 16 bit). */
#define KW_MAX_TYPES 4096
#define KW_MAX_RELATIONS 4096
/* Expression nesting in one permission. */
#define KW_MAX_EXPR_DEPTH 64
/* Nesting of arrays and objects in a relationship string's caveat context (JSON). */
#define KW_MAX_CAVEAT_CTX_DEPTH 64
/* CEL (caveat expressions): text bytes of one expression (SpiceDB's cap), nesting of
 * its syntax tree, and the cost units one evaluation may spend (a node visited, an element
 * a macro or a comparison walks, 64 bytes a string operation touches) before KW_EBUDGET. */
#define KW_CEL_MAX_EXPR_BYTES 100000u
#define KW_CEL_MAX_DEPTH 100
#define KW_CEL_MAX_COST 1000000u
/* Updates and preconditions per write batch (SpiceDB's default is 1000). */
#define KW_MAX_UPDATES_PER_WRITE 1000
#define KW_MAX_PRECONDITIONS 1000
/* Subject sets expanded for one expected-relations entry of a validation file (vfile). */
#define KW_MAX_VFILE_EXPANSIONS 100000
/* Free-text fields of the agent and key routes, in Unicode code points (docs/API.md,
 * "Field limits"): names (agent, key, agent_name) as the contract fixes them, and an agent's
 * description, which the contract leaves open (at most 4 bytes a code point: 16 KiB). */
#define KW_MAX_NAME_CHARS 255
#define KW_MAX_DESCRIPTION_CHARS 4096
/* A key's lifecycle (issue 14, docs/API.md): the longest lifetime a key may be given at
 * create (ttl_seconds, or expires_at from now): 10 years of 365 days; the longest grace
 * period of a rotation, during which the previous secret still authenticates: 7 days. */
#define KW_MAX_KEY_LIFETIME_S 315360000L
#define KW_MAX_ROTATE_GRACE_S 604800L
/* POST /auth/verify: checks per call. */
#define KW_MAX_VERIFY_CHECKS 100
/* HTTP request body. */
#define KW_MAX_BODY_BYTES (1024u * 1024u)
/* A streamed HTTP request body (routes with KW_HTTP_ROUTE_STREAM_BODY: /v1 bulk import),
 * handed to its handler in pieces as it arrives, so its size costs no memory; the cap
 * bounds what one request may make a single transaction write (16 GiB: some 80 million
 * relationships in the gateway's JSON). Past it: 413. */
#define KW_MAX_STREAM_BODY_BYTES (16ull * 1024u * 1024u * 1024u)
/* One message of a streamed request body (an ImportBulkRelationshipsRequest over the
 * gateway): gRPC's default maximum received message size. */
#define KW_MAX_STREAM_MSG_BYTES (4u * 1024u * 1024u)
/* HTTP request line + headers (431 past it) and header fields per request. */
#define KW_MAX_HEADER_BYTES (64u * 1024u)
#define KW_MAX_HEADERS 128

#endif
