/*
 * base/limits.h - every hard cap in keyward, in one place.
 */
#ifndef KW_BASE_LIMITS_H
#define KW_BASE_LIMITS_H

/* Check: nested dispatches before KW_EDEPTH (SpiceDB's default max depth). */
#define KW_MAX_CHECK_DEPTH 50
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
/* Updates and preconditions per write batch (SpiceDB's default is 1000). */
#define KW_MAX_UPDATES_PER_WRITE 1000
#define KW_MAX_PRECONDITIONS 1000
/* Free-text fields of the agent and key routes, in Unicode code points (docs/API.md,
 * "Field limits"): names (agent, key, agent_name) as the contract fixes them, and an agent's
 * description, which the contract leaves open (at most 4 bytes a code point: 16 KiB). */
#define KW_MAX_NAME_CHARS 255
#define KW_MAX_DESCRIPTION_CHARS 4096
/* HTTP request body. */
#define KW_MAX_BODY_BYTES (1024u * 1024u)

#endif
