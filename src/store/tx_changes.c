/*
 * store/tx_changes.c - the change list of a write transaction (tx_changes.h).
 */
#include "tx_changes.h"

#include <string.h>

void kw__store_changes_init(kw__store_changes_t *ch)
{
    memset(ch, 0, sizeof(*ch));
}

void kw__store_changes_fini(kw__store_changes_t *ch)
{
    kw_free(ch->ups);
    kw_arena_free(ch->strs);
    kw__store_changes_init(ch);
}

int kw__store_changes_record(kw__store_changes_t *ch, kw_op_t op, const kw_rel_t *rel)
{
    const bool del = op == KW_OP_DELETE;
    const kw_str_t f[8] = {rel->resource.type,
                           rel->resource.id,
                           rel->relation,
                           rel->subject.type,
                           rel->subject.id,
                           rel->subject.relation,
                           del ? KW_STR_NULL : rel->caveat,
                           del ? KW_STR_NULL : rel->caveat_ctx};
    if (!ch->strs) {
        ch->strs = kw_arena_new(0);
        if (!ch->strs)
            return KW_ENOMEM;
    }
    void *p = ch->ups;
    if (kw_grow(&p, &ch->cap, ch->n + 1, sizeof(kw_update_t)) != KW_OK)
        return KW_ENOMEM;
    ch->ups = p;
    kw_str_t c[8];
    for (int i = 0; i < 8; i++) {
        if (i >= 6 && f[i].len == 0) {
            c[i] = KW_STR(""); /* no caveat (the common case): nothing to copy */
            continue;
        }
        if (kw_arena_str_copy(ch->strs, f[i], &c[i]) != KW_OK)
            return KW_ENOMEM;
    }
    ch->ups[ch->n++] = (kw_update_t){.op = op,
                                     .rel = {.resource = {c[0], c[1]},
                                             .relation = c[2],
                                             .subject = {c[3], c[4], c[5]},
                                             .caveat = c[6],
                                             .caveat_ctx = c[7],
                                             .expires_at = del ? 0 : rel->expires_at}};
    return KW_OK;
}

void kw__store_changes_unrecord(kw__store_changes_t *ch)
{
    if (ch->n > 0)
        ch->n--;
}

void kw__store_changes_truncate(kw__store_changes_t *ch, size_t n)
{
    if (n < ch->n)
        ch->n = n;
}
