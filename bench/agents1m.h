/*
 * bench/agents1m.h - the "agents-1M" dataset of the engine benchmarks (bench/authz_bench.c,
 * bench/lookup_bench.c), header-only like corun.h: the default schema, the UUID-shaped ids
 * and the loader.
 *
 * At n_accounts = 1,000: 1,000 accounts x 20 members (the first is admin, the rest
 * members); 10 agents per account (account, owner = one of its members, self); 100 keys
 * per agent (parent_agent, account, owner = the agent's owner): 1,000,000 keys and
 * 3,050,000 relationships. Ids are UUID-shaped (36 chars) and derived from (kind, index)
 * by a hash, so a benchmark keeps no per-object memory and the RSS delta is the engine's.
 */
#ifndef KW_BENCH_AGENTS1M_H
#define KW_BENCH_AGENTS1M_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "authz/authz.h"

#define MEMBERS_PER_ACCOUNT 20
#define AGENTS_PER_ACCOUNT 10
#define KEYS_PER_AGENT 100
#define BATCH 1000
#define ID_LEN 36

/* The default schema without its comments. It must stay equivalent to
 * src/api/agentex.zed (tag-kw-agentex-schema). */
static const char agents1m_schema[] =
    "definition user {}\n"
    "definition service_account {}\n"
    "definition account {\n"
    "    relation admin: user | service_account\n"
    "    relation member: user | service_account\n"
    "    permission gate = admin + member\n"
    "    permission manage = admin\n"
    "    permission create_agent = admin + member\n"
    "}\n"
    "definition agent {\n"
    "    relation account: account\n"
    "    relation owner: user | service_account\n"
    "    relation editor: user | service_account | account#member\n"
    "    relation viewer: user | service_account | account#member\n"
    "    relation self: agent\n"
    "    permission tenant_gate = account->gate\n"
    "    permission read = ((owner + editor + viewer + account->manage) & tenant_gate) + self\n"
    "    permission update = (owner + editor + account->manage) & tenant_gate\n"
    "    permission delete = (owner + account->manage) & tenant_gate\n"
    "}\n"
    "definition agent_api_key {\n"
    "    relation parent_agent: agent\n"
    "    relation account: account\n"
    "    relation owner: user | service_account\n"
    "    relation editor: user | service_account\n"
    "    relation viewer: user | service_account\n"
    "    permission tenant_gate = account->gate\n"
    "    permission read = (owner + editor + viewer + parent_agent->update) & "
    "parent_agent->read & tenant_gate\n"
    "    permission update = (owner + editor) & parent_agent->update & tenant_gate\n"
    "    permission delete = (owner + editor) & parent_agent->update & tenant_gate\n"
    "}\n";

/* K_NONE names the one object "big" (lookup_bench's doc:big). */
typedef enum { K_NONE = 0, K_USER, K_ACCOUNT, K_AGENT, K_KEY } kind_t;

/* Writes the low `digits` nibbles of v as lowercase hex. */
static inline char *agents1m_hex(char *p, uint64_t v, int digits)
{
    static const char xd[] = "0123456789abcdef";
    for (int i = digits - 1; i >= 0; i--)
        *p++ = xd[(v >> (4 * i)) & 0xf];
    return p;
}

/* A UUID-v4-shaped id for (kind, index), deterministic. out gets ID_LEN chars + NUL.
 * Formatted by hand: snprintf here was a third of the measured load time. */
static inline void make_id(kind_t kind, uint64_t index, char out[ID_LEN + 1])
{
    uint64_t h1 = kw_hash_u64(((uint64_t)kind << 56) ^ index ^ 0x9e3779b97f4a7c15ULL);
    uint64_t h2 = kw_hash_u64(h1 ^ 0xd1b54a32d192ed03ULL);
    char *p = agents1m_hex(out, h1 >> 32, 8);
    *p++ = '-';
    p = agents1m_hex(p, (h1 >> 16) & 0xffffu, 4);
    *p++ = '-';
    *p++ = '4';
    p = agents1m_hex(p, h1 & 0xfffu, 3);
    *p++ = '-';
    p = agents1m_hex(p, 0x8000u | ((h2 >> 48) & 0x3fffu), 4);
    *p++ = '-';
    p = agents1m_hex(p, h2 & 0xffffffffffffULL, 12);
    *p = '\0';
}

/* The member index (1..19) that owns agent j of an account, and so all its keys. */
static inline uint64_t agent_owner_member(uint64_t j)
{
    return 1 + j % (MEMBERS_PER_ACCOUNT - 1);
}

/* Relationships written in batches of BATCH TOUCH (kw_engine_write). */
typedef struct batch {
    kw_update_t ups[BATCH];
    char ids[BATCH][2][ID_LEN + 1];
    size_t n;
    kw_engine_t *e;
    const char *prog; /* for the error message */
    double write_s;   /* wall time inside kw_engine_write */
    size_t total;     /* relationships written */
} batch_t;

static inline double agents1m_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline void flush(batch_t *b)
{
    if (b->n == 0)
        return;
    kw_diag_t d;
    double t0 = agents1m_now();
    int rc = kw_engine_write(b->e, b->ups, b->n, NULL, 0, 0, NULL, &d);
    b->write_s += agents1m_now() - t0;
    if (rc != KW_OK) {
        fprintf(stderr, "%s: write: %s (%s)\n", b->prog ? b->prog : "bench", d.msg,
                kw_err_name(rc));
        exit(1);
    }
    b->total += b->n;
    b->n = 0;
}

static inline void add(batch_t *b, const char *rtype, kind_t rk, uint64_t ri, const char *rel,
                       const char *stype, kind_t sk, uint64_t si)
{
    size_t i = b->n;
    if (rk != K_NONE)
        make_id(rk, ri, b->ids[i][0]);
    else
        memcpy(b->ids[i][0], "big", 4);
    make_id(sk, si, b->ids[i][1]);
    kw_update_t *u = &b->ups[i];
    u->op = KW_OP_TOUCH;
    u->rel.resource = (kw_object_t){kw_str_c(rtype), kw_str_c(b->ids[i][0])};
    u->rel.relation = kw_str_c(rel);
    u->rel.subject = (kw_subject_t){kw_str_c(stype), {b->ids[i][1], ID_LEN}, KW_STR_NULL};
    if (++b->n == BATCH)
        flush(b);
}

/* The whole dataset for n_accounts accounts, through b (whose e is set). */
static inline void agents1m_load(batch_t *b, uint64_t n_accounts)
{
    for (uint64_t a = 0; a < n_accounts; a++) {
        for (uint64_t m = 0; m < MEMBERS_PER_ACCOUNT; m++)
            add(b, "account", K_ACCOUNT, a, m == 0 ? "admin" : "member", "user", K_USER,
                a * MEMBERS_PER_ACCOUNT + m);
        for (uint64_t j = 0; j < AGENTS_PER_ACCOUNT; j++) {
            uint64_t g = a * AGENTS_PER_ACCOUNT + j;
            uint64_t owner = a * MEMBERS_PER_ACCOUNT + agent_owner_member(j);
            add(b, "agent", K_AGENT, g, "account", "account", K_ACCOUNT, a);
            add(b, "agent", K_AGENT, g, "owner", "user", K_USER, owner);
            add(b, "agent", K_AGENT, g, "self", "agent", K_AGENT, g);
            for (uint64_t i = 0; i < KEYS_PER_AGENT; i++) {
                uint64_t k = g * KEYS_PER_AGENT + i;
                add(b, "agent_api_key", K_KEY, k, "parent_agent", "agent", K_AGENT, g);
                add(b, "agent_api_key", K_KEY, k, "account", "account", K_ACCOUNT, a);
                add(b, "agent_api_key", K_KEY, k, "owner", "user", K_USER, owner);
            }
        }
    }
    flush(b);
}

#endif
