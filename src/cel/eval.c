/*
 * cel/eval.c - evaluation with partial evaluation, and kw_cel_eval.
 *
 * A parameter neither context gives is an unknown: a value that carries the set of
 * parameters it stands for. Operators and functions given an unknown return the union
 * of their unknown arguments' sets (cel-go's partial evaluation), except && and ||,
 * which are commutative as in CEL: a false term decides an &&, a true term an ||, in any
 * position, whatever the other terms are (unknown or error). Otherwise unknowns win over
 * errors, so an answer that still depends on missing parameters comes back PARTIAL with
 * their names rather than as an error. all()/exists() fold their predicates the same way.
 * Every node visited and every element a macro or operator walks is charged to a cost
 * budget (KW_CEL_MAX_COST); past it the evaluation stops with KW_EBUDGET.
 */
#include "cel_int.h"

#include <string.h>

static const char E_OVERLOAD[] = "no such overload";

static bool is_ue(const cel_val_t *v)
{
    return v->k == CK_UNKNOWN || v->k == CK_ERROR;
}

/* Merges the unknowns among vals (or returns the first error when none is unknown). */
static cel_val_t merge(cel_ev_t *ev, const cel_val_t *vals, uint32_t n)
{
    const cel_val_t *first_unknown = NULL, *first_err = NULL;
    uint32_t n_unknown = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (vals[i].k == CK_UNKNOWN) {
            if (!first_unknown)
                first_unknown = &vals[i];
            n_unknown++;
        } else if (vals[i].k == CK_ERROR && !first_err) {
            first_err = &vals[i];
        }
    }
    if (!first_unknown)
        return *first_err;
    if (n_unknown == 1)
        return *first_unknown;
    uint64_t *bits = kw__cel_alloc(ev, ev->p->n_words * sizeof(*bits));
    if (!bits)
        return kw__cel_oom(ev);
    memset(bits, 0, ev->p->n_words * sizeof(*bits));
    for (uint32_t i = 0; i < n; i++)
        if (vals[i].k == CK_UNKNOWN)
            for (size_t w = 0; w < ev->p->n_words; w++)
                bits[w] |= vals[i].v.unknown[w];
    cel_val_t v;
    v.k = CK_UNKNOWN;
    v.v.unknown = bits;
    return v;
}

static cel_val_t eval(cel_ev_t *ev, const cel_node_t *n);

static cel_val_t lookup(const cel_val_t *m, const cel_val_t *key, const char *name_for_err,
                        cel_ev_t *ev)
{
    if (m->k != CK_MAP)
        return kw__cel_err(E_OVERLOAD);
    if (!kw__cel_charge(ev, m->v.map->n / 8 + 1))
        return kw__cel_err("budget");
    for (uint32_t i = 0; i < m->v.map->n; i++)
        if (kw__cel_equal(&m->v.map->keys[i], key))
            return m->v.map->vals[i];
    (void)name_for_err;
    if (key->k == CK_STRING) {
        kw_arena_t *a = kw__cel_arena(ev);
        char *msg =
            !a ? NULL
               : kw_arena_sprintf(a, "no such key: %.*s",
                                  (int)(key->v.s.len > 64 ? 64 : key->v.s.len), key->v.s.ptr);
        return msg ? kw__cel_err(msg) : kw__cel_oom(ev);
    }
    return kw__cel_err("no such key");
}

/* && (is_and) or || over n evaluated terms. */
static cel_val_t logic(cel_ev_t *ev, bool is_and, const cel_val_t *terms, uint32_t n)
{
    bool pending = false;
    for (uint32_t i = 0; i < n; i++) {
        if (terms[i].k == CK_BOOL) {
            if (terms[i].v.b != is_and)
                return terms[i]; /* false decides &&, true decides || */
        } else {
            pending = true;
        }
    }
    if (!pending)
        return kw__cel_bool(is_and);
    for (uint32_t i = 0; i < n; i++)
        if (!is_ue(&terms[i]) && terms[i].k != CK_BOOL)
            return kw__cel_err(E_OVERLOAD);
    return merge(ev, terms, n);
}

static cel_val_t eval_logic(cel_ev_t *ev, const cel_node_t *n)
{
    bool is_and = n->kind == N_AND;
    cel_val_t small[8];
    cel_val_t *terms = n->n_args <= 8 ? small : kw__cel_alloc(ev, n->n_args * sizeof(*terms));
    if (!terms)
        return kw__cel_oom(ev);
    for (uint32_t i = 0; i < n->n_args; i++) {
        terms[i] = eval(ev, n->args[i]);
        if (ev->hard)
            return terms[i];
        if (terms[i].k == CK_BOOL && terms[i].v.b != is_and)
            return terms[i];
    }
    return logic(ev, is_and, terms, n->n_args);
}

static cel_val_t make_list(cel_ev_t *ev, cel_val_t *items, uint32_t n)
{
    cel_list_t *l = kw__cel_alloc(ev, sizeof(*l));
    if (!l)
        return kw__cel_oom(ev);
    l->items = items;
    l->n = n;
    cel_val_t v;
    v.k = CK_LIST;
    v.v.list = l;
    return v;
}

static cel_val_t eval_comp(cel_ev_t *ev, const cel_node_t *n)
{
    cel_val_t range = eval(ev, n->a);
    if (ev->hard || is_ue(&range))
        return range;
    const cel_val_t *elems;
    uint32_t count;
    if (range.k == CK_LIST) {
        elems = range.v.list->items;
        count = range.v.list->n;
    } else if (range.k == CK_MAP) {
        elems = range.v.map->keys;
        count = range.v.map->n;
    } else {
        return kw__cel_err(E_OVERLOAD);
    }
    cel_macro_t m = (cel_macro_t)n->op;
    cel_val_t *pending = NULL; /* ALL/EXISTS: unknown/error predicate results */
    uint32_t n_pending = 0;
    cel_val_t *out = NULL; /* MAP/FILTER: the new list */
    uint32_t n_out = 0;
    int64_t ones = 0;
    if (count) {
        if (m == M_MAP || m == M_FILTER)
            out = kw__cel_alloc(ev, count * sizeof(*out));
        else
            pending = kw__cel_alloc(ev, count * sizeof(*pending));
        if (!out && !pending)
            return kw__cel_oom(ev);
    }
    cel_val_t *slot = &ev->iters[n->slot];
    for (uint32_t i = 0; i < count; i++) {
        if (!kw__cel_charge(ev, 1))
            return kw__cel_err("budget");
        *slot = elems[i];
        cel_val_t pv = kw__cel_bool(true);
        if (n->b) {
            pv = eval(ev, n->b);
            if (ev->hard)
                return pv;
        }
        switch (m) {
        case M_ALL:
        case M_EXISTS:
            if (pv.k == CK_BOOL) {
                if (pv.v.b == (m == M_EXISTS))
                    return pv;
            } else {
                pending[n_pending++] = pv;
            }
            break;
        case M_EXISTS_ONE:
            if (is_ue(&pv))
                return pv;
            if (pv.k != CK_BOOL)
                return kw__cel_err(E_OVERLOAD);
            ones += pv.v.b;
            break;
        case M_MAP:
        case M_FILTER:
            if (is_ue(&pv))
                return pv;
            if (pv.k != CK_BOOL)
                return kw__cel_err(E_OVERLOAD);
            if (!pv.v.b)
                break;
            if (m == M_FILTER) {
                out[n_out++] = elems[i];
            } else {
                cel_val_t t = eval(ev, n->c);
                if (ev->hard || is_ue(&t))
                    return t;
                out[n_out++] = t;
            }
            break;
        }
    }
    switch (m) {
    case M_ALL:
    case M_EXISTS:
        return n_pending ? logic(ev, m == M_ALL, pending, n_pending) : kw__cel_bool(m == M_ALL);
    case M_EXISTS_ONE:
        return kw__cel_bool(ones == 1);
    case M_MAP:
    case M_FILTER:
        break;
    }
    return make_list(ev, out, n_out);
}

static cel_val_t eval_index(cel_ev_t *ev, const cel_val_t *c, const cel_val_t *i)
{
    if (c->k == CK_LIST) {
        int64_t idx;
        if (i->k == CK_INT)
            idx = i->v.i;
        else if (i->k == CK_UINT && i->v.u <= (uint64_t)INT64_MAX)
            idx = (int64_t)i->v.u;
        else if (i->k == CK_DOUBLE && i->v.d == (double)(int64_t)i->v.d)
            idx = (int64_t)i->v.d;
        else if (i->k == CK_UINT)
            return kw__cel_err("index out of range");
        else
            return kw__cel_err(E_OVERLOAD);
        if (idx < 0 || idx >= (int64_t)c->v.list->n)
            return kw__cel_err("index out of range");
        return c->v.list->items[idx];
    }
    if (c->k == CK_MAP)
        return lookup(c, i, NULL, ev);
    return kw__cel_err(E_OVERLOAD);
}

static cel_val_t eval(cel_ev_t *ev, const cel_node_t *n)
{
    if (!kw__cel_charge(ev, 1))
        return kw__cel_err("budget");
    cel_val_t a, b, v;
    switch (n->kind) {
    case N_LIT:
        return n->val;
    case N_IDENT:
        return n->slot >= 0 ? ev->params[n->slot] : ev->iters[-(n->slot + 1)];
    case N_SELECT:
    case N_HAS: {
        a = eval(ev, n->a);
        if (ev->hard || is_ue(&a))
            return a;
        /* a.?f, and any selection through an optional: the result is optional */
        bool wrap = n->kind == N_SELECT && (n->op || a.k == CK_OPT);
        if (n->kind == N_SELECT && a.k == CK_OPT) {
            if (!a.v.opt)
                return a; /* none stays none */
            a = *a.v.opt;
        }
        if (a.k != CK_MAP) { /* has() of a field of a non-map is false, as in cel-go */
            if (wrap)
                return kw__cel_opt(ev, NULL); /* an optional selection finds nothing */
            return n->kind == N_HAS ? kw__cel_bool(false) : kw__cel_err(E_OVERLOAD);
        }
        cel_val_t key;
        key.k = CK_STRING;
        key.v.s = n->name;
        v = lookup(&a, &key, NULL, ev);
        if (n->kind == N_HAS)
            return ev->hard ? v : kw__cel_bool(v.k != CK_ERROR);
        if (wrap && v.k == CK_ERROR && !ev->hard)
            return kw__cel_opt(ev, NULL); /* a missing key in an optional chain: none */
        if (wrap && v.k != CK_ERROR)
            return kw__cel_opt(ev, &v);
        return v;
    }
    case N_INDEX: {
        cel_val_t ab[2];
        ab[0] = eval(ev, n->a);
        if (ev->hard)
            return ab[0];
        ab[1] = eval(ev, n->b);
        if (ev->hard)
            return ab[1];
        if (is_ue(&ab[0]) || is_ue(&ab[1]))
            return merge(ev, ab, 2);
        bool wrap = n->op || ab[0].k == CK_OPT;
        if (ab[0].k == CK_OPT) {
            if (!ab[0].v.opt)
                return ab[0];
            ab[0] = *ab[0].v.opt;
        }
        v = eval_index(ev, &ab[0], &ab[1]);
        if (!wrap || ev->hard)
            return v;
        if (v.k == CK_ERROR)
            return kw__cel_opt(ev, NULL); /* a missing entry in an optional chain: none */
        return kw__cel_opt(ev, &v);
    }
    case N_CALL: {
        cel_val_t args[4];
        uint32_t na = 0;
        bool ue = false;
        if (n->a)
            args[na++] = eval(ev, n->a);
        /* o.or(p) and o.orValue(v) evaluate their argument only when o is none */
        if ((n->op == F_OR || n->op == F_OR_VALUE) && !ev->hard && args[0].k == CK_OPT &&
            args[0].v.opt)
            return n->op == F_OR ? args[0] : *args[0].v.opt;
        for (uint32_t i = 0; i < n->n_args && na < KW_ARRAY_LEN(args); i++)
            args[na++] = eval(ev, n->args[i]);
        if (ev->hard)
            return kw__cel_err("stopped");
        for (uint32_t i = 0; i < na; i++)
            ue = ue || is_ue(&args[i]);
        if (ue)
            return merge(ev, args, na);
        /* cel-go checks arguments against the overload the checker chose: a uint
         * parameter (declared to CEL as int) reaching int(), string() ... is refused */
        for (uint32_t i = 0; i < na && n->op != F_DYN && n->op != F_TYPE; i++) {
            const cel_type_t *st =
                n->a ? (i == 0 ? n->a->type : n->args[i - 1]->type) : n->args[i]->type;
            if (st->k == CK_INT && args[i].k == CK_UINT)
                return kw__cel_err(E_OVERLOAD);
        }
        return kw__cel_call(ev, n, args, na);
    }
    case N_LIST:
    case N_MAP: {
        cel_val_t *items = n->n_args ? kw__cel_alloc(ev, n->n_args * sizeof(*items)) : NULL;
        if (n->n_args && !items)
            return kw__cel_oom(ev);
        bool ue = false;
        for (uint32_t i = 0; i < n->n_args; i++) {
            items[i] = eval(ev, n->args[i]);
            if (ev->hard)
                return items[i];
            ue = ue || is_ue(&items[i]);
        }
        if (ue)
            return merge(ev, items, n->n_args);
        /* [?x] and {?k: v}: keep the element or entry only when the optional holds one */
        uint32_t kept = 0, step = n->kind == N_LIST ? 1 : 2;
        for (uint32_t i = 0; i < n->n_args; i += step) {
            cel_val_t *val = &items[i + step - 1];
            if (n->args[i]->opt_entry) {
                if (val->k != CK_OPT)
                    return kw__cel_err(E_OVERLOAD);
                if (!val->v.opt)
                    continue;
                *val = *val->v.opt;
            }
            for (uint32_t j = 0; j < step; j++)
                items[kept + j] = items[i + j];
            kept += step;
        }
        if (n->kind == N_LIST)
            return make_list(ev, items, kept);
        uint32_t pairs = kept / 2;
        cel_map_t *m = kw__cel_alloc(ev, sizeof(*m));
        cel_val_t *keys = pairs ? kw__cel_alloc(ev, pairs * sizeof(*keys)) : NULL;
        cel_val_t *vals = pairs ? kw__cel_alloc(ev, pairs * sizeof(*vals)) : NULL;
        if (!m || (pairs && (!keys || !vals)))
            return kw__cel_oom(ev);
        if (!kw__cel_charge(ev, (uint64_t)pairs * pairs / 8))
            return kw__cel_err("budget");
        uint32_t n_keys = 0;
        for (uint32_t i = 0; i < pairs; i++) {
            cel_kind_t k = items[2 * i].k;
            if (k != CK_INT && k != CK_UINT && k != CK_BOOL && k != CK_STRING)
                return kw__cel_err("unsupported map key type");
            /* a repeated key keeps its last value (cel-go builds a Go map) */
            uint32_t j = 0;
            while (j < n_keys && !kw__cel_equal(&keys[j], &items[2 * i]))
                j++;
            keys[j] = items[2 * i];
            vals[j] = items[2 * i + 1];
            if (j == n_keys)
                n_keys++;
        }
        m->keys = keys;
        m->vals = vals;
        m->n = n_keys;
        v.k = CK_MAP;
        v.v.map = m;
        return v;
    }
    case N_AND:
    case N_OR:
        return eval_logic(ev, n);
    case N_NOT:
        a = eval(ev, n->a);
        if (ev->hard || is_ue(&a))
            return a;
        return a.k == CK_BOOL ? kw__cel_bool(!a.v.b) : kw__cel_err(E_OVERLOAD);
    case N_NEG:
        a = eval(ev, n->a);
        if (ev->hard || is_ue(&a))
            return a;
        if (a.k == CK_INT) {
            if (a.v.i == INT64_MIN)
                return kw__cel_err("integer overflow");
            a.v.i = -a.v.i;
            return a;
        }
        if (a.k == CK_DOUBLE) {
            a.v.d = -a.v.d;
            return a;
        }
        return kw__cel_err(E_OVERLOAD);
    case N_BINOP: {
        cel_val_t ab[2];
        ab[0] = eval(ev, n->a);
        if (ev->hard)
            return ab[0];
        ab[1] = eval(ev, n->b);
        if (ev->hard)
            return ab[1];
        if (is_ue(&ab[0]) || is_ue(&ab[1]))
            return merge(ev, ab, 2);
        return kw__cel_binop(ev, (cel_op_t)n->op, &ab[0], &ab[1]);
    }
    case N_COND:
        a = eval(ev, n->a);
        if (ev->hard || is_ue(&a))
            return a;
        if (a.k != CK_BOOL)
            return kw__cel_err(E_OVERLOAD);
        b = eval(ev, a.v.b ? n->b : n->c);
        return b;
    case N_COMP:
        return eval_comp(ev, n);
    }
    return kw__cel_err(E_OVERLOAD);
}

int kw_cel_eval(const kw_cel_program_t *p, const kw_cel_ctx_t *rel_ctx, const kw_cel_ctx_t *req_ctx,
                kw_cel_result_t *out, kw_buf_t *missing, kw_diag_t *diag)
{
    if (!p || !out || (rel_ctx && rel_ctx->p != p) || (req_ctx && req_ctx->p != p))
        return kw_diag_set(diag, KW_EINVAL, 0, 0, "a context bound to another caveat");
    int rc = KW_ENOMEM;
    cel_ev_t ev;
    memset(&ev, 0, sizeof(ev));
    ev.p = p;
    /* small programs evaluate without touching the heap */
    cel_val_t params_small[16], iters_small[8];
    uint64_t bits_small[16];
    size_t np = p->n_params ? p->n_params : 1;
    bool small = np <= 16 && p->n_words == 1 && p->max_iter < 8;
    cel_val_t *params = small ? params_small : kw__cel_alloc(&ev, np * sizeof(*params));
    uint64_t *bits = small ? bits_small : kw__cel_alloc(&ev, np * p->n_words * sizeof(*bits) + 8);
    ev.iters = small ? iters_small : kw__cel_alloc(&ev, (p->max_iter + 1) * sizeof(*ev.iters));
    if (!params || !bits || !ev.iters)
        goto done;
    memset(bits, 0, np * p->n_words * sizeof(*bits));
    for (size_t i = 0; i < p->n_params; i++) {
        const kw_cel_ctx_t *from = rel_ctx && rel_ctx->present[i]   ? rel_ctx
                                   : req_ctx && req_ctx->present[i] ? req_ctx
                                                                    : NULL;
        if (from && from->errs[i]) {
            rc = kw_diag_set(diag, KW_EINVAL, 0, 0, "%s", from->errs[i]);
            goto done;
        }
        if (from) {
            params[i] = from->vals[i];
        } else {
            uint64_t *mine = bits + i * p->n_words;
            mine[i / 64] |= 1ULL << (i % 64);
            params[i].k = CK_UNKNOWN;
            params[i].v.unknown = mine;
        }
    }
    ev.params = params;
    cel_val_t r = eval(&ev, p->root);
    if (ev.hard) {
        rc = ev.hard;
        if (rc == KW_EBUDGET)
            kw_diag_set(diag, rc, 0, 0, "%s", ev.hard_msg ? ev.hard_msg : "budget exceeded");
        goto done;
    }
    if (r.k == CK_BOOL) {
        *out = r.v.b ? KW_CEL_TRUE : KW_CEL_FALSE;
        rc = KW_OK;
    } else if (r.k == CK_UNKNOWN) {
        if (missing) {
            bool first = true;
            for (size_t i = 0; i < p->n_params; i++)
                if (r.v.unknown[i / 64] & (1ULL << (i % 64))) {
                    if (!first)
                        kw_buf_append(missing, ",", 1);
                    kw_buf_append(missing, p->params[i].name.ptr, p->params[i].name.len);
                    first = false;
                }
            if (missing->failed)
                goto done;
        }
        *out = KW_CEL_PARTIAL;
        rc = KW_OK;
    } else if (r.k == CK_ERROR) {
        rc = kw_diag_set(diag, KW_EINVAL, 0, 0, "evaluating the caveat failed: %s", r.v.err);
    } else {
        rc = kw_diag_set(diag, KW_EINVAL, 0, 0, "the caveat did not evaluate to a bool");
    }
done:
    if (ev.a)
        kw_arena_free(ev.a);
    return rc;
}
