/*
 * api/v1_codec.c - the proto3 JSON of the /v1 API as grpc-gateway reads and writes it:
 * error bodies (google.rpc.Status with SpiceDB's ErrorInfo), request decoding (JSON or
 * proto field names, enum names or numbers, objects, subjects, relationships, filters,
 * preconditions, limits, cursors, consistency and its ZedTokens), response encoding
 * (whole answers, and streams of `{"result": ...}` lines sent chunked as they come).
 * Nothing here touches the engine or the store, and nothing here decides an answer.
 */
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "v1_int.h"
#include "base/log.h"

#define KW_MODULE "v1"

/* ---- errors ---- */

json_t *kw__v1_status_json(const kw_v1_status_t *st)
{
    json_t *details = json_array();
    if (details && st->reason) {
        json_t *meta = json_object();
        for (size_t i = 0; meta && i < st->n_meta; i++)
            if (json_object_set_new(meta, st->meta_key[i], json_string(st->meta_val[i])) != 0) {
                json_decref(meta);
                meta = NULL;
            }
        json_t *info = meta ? json_pack("{s:s, s:s, s:s, s:o}", "@type",
                                        "type.googleapis.com/google.rpc.ErrorInfo", "reason",
                                        st->reason, "domain", "authzed.com", "metadata", meta)
                            : NULL;
        if (!info || json_array_append_new(details, info) != 0) {
            json_decref(details);
            details = NULL;
        }
    }
    const char *msg = st->msg[0] ? st->msg : "unknown error";
    return details
               ? json_pack("{s:i, s:s, s:o}", "code", st->code, "message", msg, "details", details)
               : NULL;
}

/* Writes the body by hand when jansson cannot (out of memory): the shape stays. */
static void error_body(kw_http_resp_t *resp, const kw_v1_status_t *st)
{
    json_t *body = kw__v1_status_json(st);
    const char *msg = st->msg[0] ? st->msg : "unknown error";
    /* keyward's "detail" rides along (docs/API.md): the same message. */
    if (body && json_object_set_new(body, "detail", json_string(msg)) != 0) {
        json_decref(body);
        body = NULL;
    }
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    resp->body.len = 0;
    if (resp->body.ptr)
        resp->body.ptr[0] = '\0';
    if (text) {
        kw_buf_puts(&resp->body, text);
        free(text);
        return;
    }
    kw_buf_printf(&resp->body, "{\"code\": %d, \"message\": ", st->code);
    kw_json_escape(&resp->body, kw_str_c(msg));
    kw_buf_puts(&resp->body, ", \"details\": [], \"detail\": ");
    kw_json_escape(&resp->body, kw_str_c(msg));
    kw_buf_puts(&resp->body, "}");
}

void kw__v1_status_answer(kw_http_resp_t *resp, const kw_v1_status_t *st)
{
    resp->status = kw_v1_http_status(st->code);
    resp->content_type = "application/json";
    error_body(resp, st);
}

void kw__v1_error(kw_http_resp_t *resp, int code, const char *msg)
{
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    kw_v1_fail(&st, 0, code, NULL, "%s", msg);
    kw__v1_status_answer(resp, &st);
}

void kw__v1_perr_answer(kw_http_resp_t *resp, const kw__v1_perr_t *e)
{
    const char *msg = e->msg[0] ? e->msg : "invalid request";
    kw__v1_error(resp, e->code ? e->code : KW_GRPC_INVALID_ARGUMENT, msg);
}

bool kw__v1_bad(kw__v1_perr_t *e, const char *what)
{
    e->code = KW_GRPC_INVALID_ARGUMENT;
    snprintf(e->msg, sizeof(e->msg), "%s", what);
    return false;
}

/* ---- field names ---- */

static const char *const OBJECT_FIELDS[] = {"objectType", "objectId", NULL};
static const char *const SUBJECT_FIELDS[] = {"object", "optionalRelation", NULL};
static const char *const REL_FIELDS[] = {"resource",       "relation",          "subject",
                                         "optionalCaveat", "optionalExpiresAt", NULL};
static const char *const FILTER_FIELDS[] = {
    "resourceType",     "optionalResourceId",    "optionalResourceIdPrefix",
    "optionalRelation", "optionalSubjectFilter", NULL};
static const char *const SUBJECT_FILTER_FIELDS[] = {"subjectType", "optionalSubjectId",
                                                    "optionalRelation", NULL};
static const char *const RELATION_FILTER_FIELDS[] = {"relation", NULL};
static const char *const PRECONDITION_FIELDS[] = {"operation", "filter", NULL};
static const char *const CONSISTENCY_FIELDS[] = {"minimizeLatency", "atLeastAsFresh",
                                                 "atExactSnapshot", "fullyConsistent", NULL};
static const char *const TOKEN_FIELDS[] = {"token", NULL};

/* The proto (snake_case) name of a JSON name: "optionalExpiresAt" -> "optional_expires_at".
 * false when it does not fit (never for the names of these protos). */
static bool snake_of(const char *camel, char *out, size_t cap)
{
    size_t n = 0;
    for (const char *p = camel; *p; p++) {
        bool up = *p >= 'A' && *p <= 'Z';
        if (n + 3 >= cap)
            return false;
        if (up) {
            out[n++] = '_';
            out[n++] = (char)(*p - 'A' + 'a');
        } else {
            out[n++] = *p;
        }
    }
    out[n] = '\0';
    return true;
}

json_t *kw__v1_get(json_t *o, const char *camel)
{
    json_t *v = json_object_get(o, camel);
    if (v)
        return v;
    char snake[96];
    return snake_of(camel, snake, sizeof(snake)) ? json_object_get(o, snake) : NULL;
}

/* The listed JSON name that `key` is (as itself or as its proto name), or NULL. */
static const char *field_of(const char *const *fields, const char *key)
{
    char snake[96];
    for (size_t i = 0; fields[i]; i++) {
        if (strcmp(fields[i], key) == 0)
            return fields[i];
        if (snake_of(fields[i], snake, sizeof(snake)) && strcmp(snake, key) == 0)
            return fields[i];
    }
    return NULL;
}

bool kw__v1_known(json_t *o, const char *what, const char *const *fields, kw__v1_perr_t *e)
{
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        (void)v;
        const char *f = field_of(fields, key);
        if (!f) {
            e->code = KW_GRPC_INVALID_ARGUMENT;
            snprintf(e->msg, sizeof(e->msg), "%s: unknown field \"%.60s\"", what, key);
            return false;
        }
        char snake[96];
        if (strcmp(f, key) != 0 || !snake_of(f, snake, sizeof(snake)) || strcmp(snake, f) == 0)
            continue;
        if (json_object_get(o, snake)) { /* both names of one field: protojson refuses it */
            e->code = KW_GRPC_INVALID_ARGUMENT;
            snprintf(e->msg, sizeof(e->msg), "%s: duplicate field \"%s\" (also sent as \"%s\")",
                     what, f, snake);
            return false;
        }
    }
    return true;
}

/* ---- scalars ---- */

bool kw__v1_opt_str(json_t *o, const char *key, kw_str_t *out, kw__v1_perr_t *e)
{
    json_t *v = kw__v1_get(o, key);
    *out = KW_STR_NULL;
    if (!v || json_is_null(v))
        return true;
    if (!json_is_string(v)) {
        e->code = KW_GRPC_INVALID_ARGUMENT;
        snprintf(e->msg, sizeof(e->msg), "%s must be a string", key);
        return false;
    }
    *out = (kw_str_t){json_string_value(v), json_string_length(v)};
    return true;
}

bool kw__v1_req_str(json_t *o, const char *key, kw_str_t *out, kw__v1_perr_t *e)
{
    if (!kw__v1_opt_str(o, key, out, e))
        return false;
    if (out->len == 0) {
        e->code = KW_GRPC_INVALID_ARGUMENT;
        snprintf(e->msg, sizeof(e->msg), "%s is required", key);
        return false;
    }
    return true;
}

bool kw__v1_opt_bool(json_t *o, const char *key, bool *out, kw__v1_perr_t *e)
{
    json_t *v = kw__v1_get(o, key);
    *out = false;
    if (!v || json_is_null(v))
        return true;
    if (!json_is_boolean(v)) {
        e->code = KW_GRPC_INVALID_ARGUMENT;
        snprintf(e->msg, sizeof(e->msg), "%s must be a boolean", key);
        return false;
    }
    *out = json_is_true(v);
    return true;
}

bool kw__v1_opt_struct(json_t *o, const char *key, kw_arena_t *a, kw_str_t *out, kw__v1_perr_t *e)
{
    json_t *v = kw__v1_get(o, key);
    *out = KW_STR_NULL;
    if (!v || json_is_null(v) || (json_is_object(v) && json_object_size(v) == 0))
        return true;
    if (!json_is_object(v)) {
        e->code = KW_GRPC_INVALID_ARGUMENT;
        snprintf(e->msg, sizeof(e->msg), "%s must be an object", key);
        return false;
    }
    char *text = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
    bool ok = text && kw_arena_str_copy(a, kw_str_c(text), out) == KW_OK;
    free(text);
    return ok || kw__v1_bad(e, "out of memory");
}

bool kw__v1_opt_enum(json_t *o, const char *key, const char *const *names, size_t n, int *out,
                     kw__v1_perr_t *e)
{
    json_t *v = kw__v1_get(o, key);
    *out = 0;
    if (!v || json_is_null(v))
        return true;
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        if (x >= 0 && (size_t)x < n) {
            *out = (int)x;
            return true;
        }
    } else if (json_is_string(v)) {
        for (size_t i = 0; i < n; i++)
            if (names[i] && strcmp(names[i], json_string_value(v)) == 0) {
                *out = (int)i;
                return true;
            }
    }
    e->code = KW_GRPC_INVALID_ARGUMENT;
    int w = snprintf(e->msg, sizeof(e->msg), "%s must be one of", key);
    for (size_t i = 0; i < n && w > 0 && (size_t)w < sizeof(e->msg); i++)
        if (names[i])
            w += snprintf(e->msg + w, sizeof(e->msg) - (size_t)w, "%s %s", i ? "," : "", names[i]);
    return false;
}

bool kw__v1_opt_u32(json_t *o, const char *key, uint32_t *out, kw__v1_perr_t *e)
{
    json_t *v = kw__v1_get(o, key);
    *out = 0;
    if (!v || json_is_null(v))
        return true;
    long long n = -1;
    if (json_is_integer(v))
        n = json_integer_value(v);
    else if (json_is_string(v)) {
        long x;
        if (kw_api_parse_bounded(kw_str_c(json_string_value(v)), 0, 4294967295L, &x))
            n = x;
    }
    if (n < 0 || n > 4294967295LL) {
        e->code = KW_GRPC_INVALID_ARGUMENT;
        snprintf(e->msg, sizeof(e->msg), "%s must be a non-negative 32-bit integer", key);
        return false;
    }
    *out = (uint32_t)n;
    return true;
}

/* ---- messages ---- */

/* A ZedToken {"token": "<revision>"} at consistency.<key>. */
static bool zedtoken(json_t *z, const char *key, kw_revision_t *rev, kw__v1_perr_t *e)
{
    char what[48];
    snprintf(what, sizeof(what), "consistency.%s", key);
    if (json_is_object(z) && !kw__v1_known(z, what, TOKEN_FIELDS, e))
        return false;
    json_t *t = json_is_object(z) ? json_object_get(z, "token") : NULL;
    if (json_is_string(t) &&
        kw_api_parse_revision((kw_str_t){json_string_value(t), json_string_length(t)}, rev))
        return true;
    e->code = KW_GRPC_INVALID_ARGUMENT;
    snprintf(e->msg, sizeof(e->msg), "%s must be a ZedToken {\"token\": \"<revision>\"}", what);
    return false;
}

bool kw__v1_consistency(json_t *c, kw_v1_consistency_t *out, kw__v1_perr_t *e)
{
    out->kind = KW_V1_MINIMIZE_LATENCY;
    out->rev = 0;
    if (!c || json_is_null(c))
        return true;
    if (!json_is_object(c))
        return kw__v1_bad(e, "consistency must be an object");
    if (!kw__v1_known(c, "consistency", CONSISTENCY_FIELDS, e))
        return false;
    /* A oneof: proto3 JSON refuses a second member (null members are unset). */
    size_t set = 0;
    for (size_t i = 0; CONSISTENCY_FIELDS[i]; i++) {
        json_t *v = kw__v1_get(c, CONSISTENCY_FIELDS[i]);
        set += v && !json_is_null(v);
    }
    if (set > 1)
        return kw__v1_bad(e, "consistency: set only one of minimizeLatency, atLeastAsFresh, "
                             "atExactSnapshot, fullyConsistent");
    /* minimizeLatency and fullyConsistent are bools that may only be true (SpiceDB's
     * validation: bool.const = true). */
    const char *flags[] = {"minimizeLatency", "fullyConsistent"};
    for (size_t i = 0; i < KW_ARRAY_LEN(flags); i++) {
        json_t *v = kw__v1_get(c, flags[i]);
        if (v && !json_is_null(v) && !json_is_true(v)) {
            e->code = KW_GRPC_INVALID_ARGUMENT;
            snprintf(e->msg, sizeof(e->msg), "consistency.%s must be true when set", flags[i]);
            return false;
        }
    }
    json_t *v;
    if ((v = kw__v1_get(c, "fullyConsistent")) && json_is_true(v))
        out->kind = KW_V1_FULLY_CONSISTENT;
    if ((v = kw__v1_get(c, "atLeastAsFresh")) && !json_is_null(v)) {
        if (!zedtoken(v, "atLeastAsFresh", &out->rev, e))
            return false;
        out->kind = KW_V1_AT_LEAST_AS_FRESH;
    }
    if ((v = kw__v1_get(c, "atExactSnapshot")) && !json_is_null(v)) {
        if (!zedtoken(v, "atExactSnapshot", &out->rev, e))
            return false;
        out->kind = KW_V1_AT_EXACT_SNAPSHOT;
    }
    return true;
}

bool kw__v1_opt_cursor(json_t *o, const char *key, kw_v1_cursor_t *out, kw__v1_perr_t *e)
{
    json_t *v = kw__v1_get(o, key);
    *out = KW_STR_NULL;
    if (!v || json_is_null(v))
        return true;
    if (!json_is_object(v)) {
        e->code = KW_GRPC_INVALID_ARGUMENT;
        snprintf(e->msg, sizeof(e->msg), "%s must be a Cursor {\"token\": ...}", key);
        return false;
    }
    return kw__v1_known(v, key, TOKEN_FIELDS, e) && kw__v1_req_str(v, "token", out, e);
}

bool kw__v1_parse_object(json_t *o, kw_object_t *out, const char *what, kw__v1_perr_t *e)
{
    if (!json_is_object(o)) {
        e->code = KW_GRPC_INVALID_ARGUMENT;
        snprintf(e->msg, sizeof(e->msg), "%s must be an object {objectType, objectId}", what);
        return false;
    }
    return kw__v1_known(o, what, OBJECT_FIELDS, e) &&
           kw__v1_req_str(o, "objectType", &out->type, e) &&
           kw__v1_req_str(o, "objectId", &out->id, e);
}

bool kw__v1_parse_subject(json_t *o, kw_subject_t *out, kw__v1_perr_t *e)
{
    kw_object_t obj;
    if (!json_is_object(o))
        return kw__v1_bad(e, "subject must be an object {object, optionalRelation}");
    if (!kw__v1_known(o, "subject", SUBJECT_FIELDS, e) ||
        !kw__v1_parse_object(kw__v1_get(o, "object"), &obj, "subject.object", e))
        return false;
    out->type = obj.type;
    out->id = obj.id;
    return kw__v1_opt_str(o, "optionalRelation", &out->relation, e);
}

static bool unimplemented(kw__v1_perr_t *e, const char *what, const char *key, const char *why)
{
    e->code = KW_GRPC_UNIMPLEMENTED;
    snprintf(e->msg, sizeof(e->msg), "%s.%s is not supported: %s", what, key, why);
    return false;
}

static const char *const CAVEAT_FIELDS[] = {"caveatName", "context", NULL};

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian; Howard Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static bool digits(const char *p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return true;
}

bool kw__v1_parse_timestamp(kw_str_t s, int64_t *us)
{
    /* YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|+HH:MM|-HH:MM), as protojson reads a Timestamp */
    char b[64];
    if (s.len < 20 || s.len >= sizeof(b))
        return false;
    memcpy(b, s.ptr, s.len);
    b[s.len] = '\0';
    int y, mo, d, h, mi, se;
    if (!digits(b, 4, &y) || b[4] != '-' || !digits(b + 5, 2, &mo) || b[7] != '-' ||
        !digits(b + 8, 2, &d) || (b[10] != 'T' && b[10] != 't') || !digits(b + 11, 2, &h) ||
        b[13] != ':' || !digits(b + 14, 2, &mi) || b[16] != ':' || !digits(b + 17, 2, &se))
        return false;
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || se > 59)
        return false;
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo == 2 && d == 29 && !leap)
        return false;
    size_t i = 19;
    int64_t frac = 0;
    if (b[i] == '.') {
        int n = 0;
        for (i++; b[i] >= '0' && b[i] <= '9'; i++, n++)
            if (n < 6)
                frac = frac * 10 + (b[i] - '0');
        if (n == 0 || n > 9)
            return false;
        for (; n < 6; n++)
            frac *= 10;
    }
    int64_t off = 0;
    if (b[i] == 'Z' || b[i] == 'z') {
        i++;
    } else if (b[i] == '+' || b[i] == '-') {
        int oh, om;
        if (!digits(b + i + 1, 2, &oh) || b[i + 3] != ':' || !digits(b + i + 4, 2, &om) ||
            oh > 23 || om > 59)
            return false;
        off = (int64_t)(oh * 60 + om) * 60 * (b[i] == '+' ? 1 : -1);
        i += 6;
    } else {
        return false;
    }
    if (i != s.len)
        return false;
    int64_t secs =
        days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + se - off;
    *us = secs * 1000000 + frac;
    return true;
}

bool kw__v1_parse_rel(json_t *o, kw_rel_t *out, kw__v1_perr_t *e)
{
    return kw__v1_parse_rel_in(o, NULL, out, e);
}

bool kw__v1_parse_rel_in(json_t *o, kw_arena_t *a, kw_rel_t *out, kw__v1_perr_t *e)
{
    memset(out, 0, sizeof(*out));
    if (!json_is_object(o))
        return kw__v1_bad(e, "relationship must be an object");
    if (!kw__v1_known(o, "relationship", REL_FIELDS, e) ||
        !kw__v1_parse_object(kw__v1_get(o, "resource"), &out->resource, "resource", e) ||
        !kw__v1_req_str(o, "relation", &out->relation, e) ||
        !kw__v1_parse_subject(kw__v1_get(o, "subject"), &out->subject, e))
        return false;
    json_t *v = kw__v1_get(o, "optionalCaveat");
    if (v && !json_is_null(v)) {
        if (!json_is_object(v))
            return kw__v1_bad(e, "optionalCaveat must be an object {caveatName, context}");
        json_t *ctx = kw__v1_get(v, "context");
        if (!a && ctx && !json_is_null(ctx) && !json_is_object(ctx))
            return kw__v1_bad(e, "optionalCaveat.context must be an object");
        if (!a && ctx && json_is_object(ctx) && json_object_size(ctx))
            return unimplemented(e, "relationship", "optionalCaveat.context",
                                 "not where this request reads relationships");
        if (!kw__v1_known(v, "optionalCaveat", CAVEAT_FIELDS, e) ||
            !kw__v1_req_str(v, "caveatName", &out->caveat, e) ||
            (a && !kw__v1_opt_struct(v, "context", a, &out->caveat_ctx, e)))
            return false;
    }
    v = kw__v1_get(o, "optionalExpiresAt");
    if (v && !json_is_null(v)) {
        if (!json_is_string(v) ||
            !kw__v1_parse_timestamp((kw_str_t){json_string_value(v), json_string_length(v)},
                                    &out->expires_at) ||
            out->expires_at <= 0)
            return kw__v1_bad(e, "optionalExpiresAt must be an RFC 3339 timestamp after 1970, "
                                 "e.g. \"2030-01-01T00:00:00Z\"");
    }
    return true;
}

bool kw__v1_parse_filter(json_t *o, const char *what, kw_filter_t *f, kw_str_t *prefix,
                         kw__v1_perr_t *e)
{
    memset(f, 0, sizeof(*f));
    *prefix = KW_STR_NULL;
    if (!json_is_object(o)) {
        e->code = KW_GRPC_INVALID_ARGUMENT;
        snprintf(e->msg, sizeof(e->msg), "%s must be an object", what);
        return false;
    }
    if (!kw__v1_known(o, what, FILTER_FIELDS, e) ||
        !kw__v1_opt_str(o, "optionalResourceIdPrefix", prefix, e) ||
        !kw__v1_opt_str(o, "resourceType", &f->resource_type, e) ||
        !kw__v1_opt_str(o, "optionalResourceId", &f->resource_id, e) ||
        !kw__v1_opt_str(o, "optionalRelation", &f->relation, e))
        return false;
    json_t *sf = kw__v1_get(o, "optionalSubjectFilter");
    if (sf && !json_is_null(sf)) {
        if (!json_is_object(sf))
            return kw__v1_bad(e, "optionalSubjectFilter must be an object");
        f->has_subject = true;
        if (!kw__v1_known(sf, "optionalSubjectFilter", SUBJECT_FILTER_FIELDS, e) ||
            !kw__v1_req_str(sf, "subjectType", &f->subject_type, e) ||
            !kw__v1_opt_str(sf, "optionalSubjectId", &f->subject_id, e))
            return false;
        json_t *sr = kw__v1_get(sf, "optionalRelation");
        if (sr && !json_is_null(sr)) {
            if (!json_is_object(sr))
                return kw__v1_bad(e, "optionalSubjectFilter.optionalRelation must be {relation}");
            f->subject_relation_set = true;
            if (!kw__v1_known(sr, "optionalSubjectFilter.optionalRelation", RELATION_FILTER_FIELDS,
                              e) ||
                !kw__v1_opt_str(sr, "relation", &f->subject_relation, e))
                return false;
        }
    }
    return true;
}

static const char *const PRECONDITION_OPS[] = {NULL, "OPERATION_MUST_NOT_MATCH",
                                               "OPERATION_MUST_MATCH"};

bool kw__v1_parse_preconditions(json_t *arr, kw_arena_t *a, kw_precondition_t **out, size_t *n,
                                kw__v1_perr_t *e)
{
    *out = NULL;
    *n = 0;
    if (!arr || json_is_null(arr))
        return true;
    if (!json_is_array(arr))
        return kw__v1_bad(e, "optionalPreconditions must be an array");
    size_t cnt = json_array_size(arr);
    if (cnt == 0)
        return true;
    kw_precondition_t *pre = kw_arena_alloc(a, cnt * sizeof(*pre));
    if (!pre)
        return kw__v1_bad(e, "out of memory");
    for (size_t i = 0; i < cnt; i++) {
        json_t *p = json_array_get(arr, i);
        kw_str_t prefix;
        int op = 0;
        if (!json_is_object(p))
            return kw__v1_bad(e, "each precondition must be an object {operation, filter}");
        if (!kw__v1_known(p, "optionalPreconditions[]", PRECONDITION_FIELDS, e) ||
            !kw__v1_opt_enum(p, "operation", PRECONDITION_OPS, KW_ARRAY_LEN(PRECONDITION_OPS), &op,
                             e))
            return false;
        if (op == 0)
            return kw__v1_bad(e, "precondition operation must be OPERATION_MUST_MATCH or "
                                 "OPERATION_MUST_NOT_MATCH");
        pre[i].must_match = op == 2;
        if (!kw__v1_parse_filter(kw__v1_get(p, "filter"), "optionalPreconditions[].filter",
                                 &pre[i].filter, &prefix, e))
            return false;
        if (prefix.len)
            return unimplemented(e, "optionalPreconditions[].filter", "optionalResourceIdPrefix",
                                 "keyward does not match preconditions by id prefix");
    }
    *out = pre;
    *n = cnt;
    return true;
}

/* ---- encoding ---- */

json_t *kw__v1_token_json(kw_revision_t rev)
{
    char t[24];
    snprintf(t, sizeof(t), "%" PRIu64, (uint64_t)rev);
    return json_pack("{s:s}", "token", t);
}

json_t *kw__v1_strj(kw_str_t s)
{
    return json_stringn(s.ptr ? s.ptr : "", s.len);
}

json_t *kw__v1_object_json(kw_object_t o)
{
    return json_pack("{s:o, s:o}", "objectType", kw__v1_strj(o.type), "objectId",
                     kw__v1_strj(o.id));
}

json_t *kw__v1_subject_json(const kw_subject_t *s)
{
    kw_str_t rel = s->relation;
    if (kw_str_eq_c(rel, "..."))
        rel = KW_STR_NULL;
    return json_pack("{s:o, s:o}", "object", kw__v1_object_json((kw_object_t){s->type, s->id}),
                     "optionalRelation", kw__v1_strj(rel));
}

/* google.protobuf.Timestamp as protojson writes it: RFC 3339 UTC, "Z", with 0, 3, 6 or 9
 * fractional digits (here at most 6: the engine keeps microseconds). */
json_t *kw__v1_timestamp_json(int64_t us)
{
    int64_t sec = us / 1000000, frac = us % 1000000;
    if (frac < 0) {
        frac += 1000000;
        sec--;
    }
    time_t t = (time_t)sec;
    struct tm tm;
    char text[64];
    if (!gmtime_r(&t, &tm))
        return NULL;
    size_t n = strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%S", &tm);
    if (n == 0)
        return NULL;
    if (frac % 1000 == 0 && frac)
        snprintf(text + n, sizeof(text) - n, ".%03dZ", (int)(frac / 1000));
    else if (frac)
        snprintf(text + n, sizeof(text) - n, ".%06dZ", (int)frac);
    else
        snprintf(text + n, sizeof(text) - n, "Z");
    return json_string(text);
}

json_t *kw__v1_rel_json(const kw_rel_t *r)
{
    json_t *caveat = json_null();
    if (r->caveat.len) {
        json_t *ctx = r->caveat_ctx.len ? json_loadb(r->caveat_ctx.ptr, r->caveat_ctx.len, 0, NULL)
                                        : json_object();
        caveat = ctx ? json_pack("{s:o, s:o}", "caveatName", kw__v1_strj(r->caveat), "context", ctx)
                     : NULL;
    }
    json_t *exp = r->expires_at ? kw__v1_timestamp_json(r->expires_at) : json_null();
    if (!caveat || !exp) {
        json_decref(caveat);
        json_decref(exp);
        return NULL;
    }
    return json_pack("{s:o, s:o, s:o, s:o, s:o}", "resource", kw__v1_object_json(r->resource),
                     "relation", kw__v1_strj(r->relation), "subject",
                     kw__v1_subject_json(&r->subject), "optionalCaveat", caveat,
                     "optionalExpiresAt", exp);
}

json_t *kw__v1_partial_json(kw_v1_permissionship_t p, kw_str_t missing)
{
    if (p != KW_V1_PERM_CONDITIONAL)
        return json_null();
    json_t *names = json_array();
    for (size_t i = 0; names && i < missing.len;) {
        const char *comma = memchr(missing.ptr + i, ',', missing.len - i);
        size_t end = comma ? (size_t)(comma - missing.ptr) : missing.len;
        if (end > i && json_array_append_new(names, json_stringn(missing.ptr + i, end - i)) != 0) {
            json_decref(names);
            names = NULL;
        }
        i = end + 1;
    }
    return names ? json_pack("{s:o}", "missingRequiredContext", names) : NULL;
}

json_t *kw__v1_cursor_json(const char *c)
{
    return c ? json_pack("{s:s}", "token", c) : json_null();
}

void kw__v1_answer(kw_http_req_t *req, kw_http_resp_t *resp, json_t *root, kw_revision_t rev)
{
    char *text = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (!text) {
        kw_v1_status_t st;
        kw_v1_status_clear(&st);
        kw_v1_fail_rc(&st, KW_ENOMEM, NULL, req->request_id);
        kw__v1_status_answer(resp, &st);
        return;
    }
    resp->status = 200;
    kw_buf_puts(&resp->body, text);
    free(text);
    kw__api_revision(req, resp, rev);
}

/* ---- plain text ---- */

/* The bytes kw__v1_json_plain refuses, one at a time (the tail after the words). */
static const unsigned char JSON_ESC[256] = {
    [0x00 ... 0x1f] = 1,
    ['"'] = 1,
    ['\\'] = 1,
    [0x7f ... 0xff] = 1,
};

bool kw__v1_json_plain(const char *s, size_t n)
{
    /* Per 8-byte word w, a byte's high bit in the OR below is set by: w itself (bytes >=
     * 0x80), (w - 0x20..) & ~w (some byte < 0x20), and (x - 0x01..) & ~x for x = w XOR a
     * repeated '"', '\\' or 0x7f (some byte equal to it). Each test is exact as to whether
     * some byte of w matches (borrows only spill upwards from a byte that matched). */
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    uint64_t bad = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\'), d = w ^ (ones * 0x7f);
        bad |= w | ((w - ones * 0x20) & ~w) | ((q - ones) & ~q) | ((b - ones) & ~b) |
               ((d - ones) & ~d);
    }
    bad &= high;
    for (; i < n; i++)
        bad |= JSON_ESC[(unsigned char)s[i]];
    return bad == 0;
}

/* ---- streams ---- */

void kw__v1_stream_init(kw__v1_stream_t *s, kw_http_req_t *req, kw_http_resp_t *resp)
{
    s->req = req;
    s->resp = resp;
    s->rev = 0;
    s->begun = false;
    kw_buf_init(&s->line);
    kw_buf_init(&s->pend);
}

/* Sends what is pending as one chunk (pend comes back empty). */
static int flush_pending(kw__v1_stream_t *s)
{
    if (s->pend.failed)
        return KW_ENOMEM;
    if (s->pend.len <= KW_HTTP_STREAM_HEAD)
        return KW_OK;
    return kw_http_stream_give(s->req, &s->pend);
}

int kw__v1_stream_flush(kw__v1_stream_t *s)
{
    return s->begun ? flush_pending(s) : KW_OK;
}

/* One {"<key>": v} line (steals v) into s->line. */
static int make_line(kw__v1_stream_t *s, const char *key, json_t *v)
{
    json_t *line = v ? json_pack("{s:o}", key, v) : NULL;
    char *text = line ? json_dumps(line, JSON_COMPACT) : NULL;
    json_decref(line);
    if (!text)
        return KW_ENOMEM;
    s->line.len = 0;
    kw_buf_puts(&s->line, text);
    kw_buf_puts(&s->line, "\n");
    free(text);
    return s->line.failed ? KW_ENOMEM : KW_OK;
}

char *kw__v1_stream_room(kw__v1_stream_t *s, size_t n)
{
    kw_buf_t *b = &s->pend;
    if (b->failed)
        return NULL;
    size_t at = b->len < KW_HTTP_STREAM_HEAD ? KW_HTTP_STREAM_HEAD : b->len;
    if (n >= SIZE_MAX - at - 1)
        return NULL;
    /* Grown by doubling, not reserved whole: a Watch stream's small lines keep a small
     * buffer, a large stream's reaches the chunk's size once (buffers go round between the
     * stream, the HTTP queue and the connection, so it keeps its capacity). */
    size_t need = at + n + 1; /* and the NUL a kw_buf keeps */
    if (need > b->cap && kw_grow((void **)&b->ptr, &b->cap, need, 1) != KW_OK)
        return NULL; /* not failed: the lines before still go out, then the error */
    b->len = at;
    return b->ptr + at;
}

int kw__v1_stream_commit(kw__v1_stream_t *s, size_t n, kw_revision_t rev)
{
    int rc;
    s->pend.len += n;
    s->pend.ptr[s->pend.len] = '\0';
    if (!s->begun) { /* the first line begins the stream and goes at once */
        s->rev = rev;
        s->resp->status = 200;
        s->resp->content_type = "application/json";
        kw__api_revision(s->req, s->resp, rev);
        s->begun = true;
        if ((rc = kw_http_stream_begin(s->req, s->resp)) != KW_OK) {
            s->pend.len = 0;
            return rc;
        }
        return flush_pending(s);
    }
    if (kw_http_stream_cancelled(s->req))
        return KW_EIO;
    return s->pend.len - KW_HTTP_STREAM_HEAD >= KW__V1_STREAM_CHUNK ? flush_pending(s) : KW_OK;
}

int kw__v1_stream_result(kw__v1_stream_t *s, json_t *result, kw_revision_t rev)
{
    int rc = make_line(s, "result", result);
    if (rc != KW_OK)
        return rc;
    char *p = kw__v1_stream_room(s, s->line.len);
    if (!p)
        return KW_ENOMEM;
    memcpy(p, s->line.ptr, s->line.len);
    return kw__v1_stream_commit(s, s->line.len, rev);
}

void kw__v1_stream_end(kw__v1_stream_t *s, int rc, const kw_v1_status_t *st)
{
    kw_v1_status_t late;
    if (s->begun && rc != KW_EIO) { /* the lines before an error still go out first */
        int frc = flush_pending(s);
        if (rc == KW_OK && frc != KW_OK && frc != KW_EIO) {
            kw_v1_status_clear(&late);
            kw_v1_fail_rc(&late, frc, NULL, s->req->request_id);
            rc = frc;
            st = &late;
        }
    }
    if (rc == KW_OK) {
        if (!s->begun) { /* no result: an empty 200 */
            s->resp->status = 200;
            s->resp->body.len = 0;
        }
    } else if (!s->begun) {
        kw__v1_status_answer(s->resp, st);
    } else if (rc != KW_EIO) { /* the client is still there: the error is the last line */
        if (make_line(s, "error", kw__v1_status_json(st)) == KW_OK &&
            kw_http_stream_write(s->req, s->line.ptr, s->line.len) != KW_OK)
            kw_log(KW_LOG_INFO, KW_MODULE, "request %s: the client left before the error line",
                   s->req->request_id);
    }
    kw_buf_free(&s->line);
    kw_buf_free(&s->pend);
}
