/*
 * vfile/walk.c - the YAML walk of a validation file: one fresh engine per document,
 * schema, relationships, assertions, expected relations; every outcome goes to the
 * caller's callback (vfile.h), every failure is counted in its stats.
 *
 * Counting: each failed check, each error and the one unsupported feature count once;
 * an expected-relations entry that differs counts once however many subjects differ
 * (one result per subject). A document stops at the first error that leaves nothing
 * meaningful to check (no schema, a relationship that does not load); a feature keyward
 * lacks (KW_EUNSUPPORTED) stops the whole file.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "vfile/vfile.h"
#include "vfile/vfile_int.h"

typedef struct vctx {
    const char *path; /* may be NULL */
    kw_vfile_on_result on_result;
    void *ud;
    kw_vfile_stats_t *stats;
    size_t doc;
    kw_vexpand_t x; /* engine, arena (per document) and expansion state */
} vctx_t;

/* ---- results ---- */

/* fmt formatted into a kw_malloc'd string; NULL on OOM. */
static char *vformat(const char *fmt, va_list ap) KW_PRINTF(1, 0);
static char *vformat(const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    char *s = n >= 0 ? kw_malloc((size_t)n + 1) : NULL;
    if (s)
        vsnprintf(s, (size_t)n + 1, fmt, ap);
    return s;
}

static const char k_oom_text[] = "out of memory (while formatting a validation result)";

static void vemit(vctx_t *c, kw_vfile_result_t *r, const char *fmt, va_list ap) KW_PRINTF(3, 0);
static void vemit(vctx_t *c, kw_vfile_result_t *r, const char *fmt, va_list ap)
{
    char *msg = vformat(fmt, ap);
    r->doc = c->doc;
    r->message = msg ? msg : k_oom_text;
    c->on_result(r, c->ud);
    kw_free(msg);
}

/* Delivers r with its message formatted from fmt (a fixed text when memory runs out, so
 * the outcome still arrives). */
static void emit(vctx_t *c, kw_vfile_result_t *r, const char *fmt, ...) KW_PRINTF(3, 4);
static void emit(vctx_t *c, kw_vfile_result_t *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vemit(c, r, fmt, ap);
    va_end(ap);
}

/* An error in the input, counted. */
static void failf(vctx_t *c, unsigned long line, const char *fmt, ...) KW_PRINTF(3, 4);
static void failf(vctx_t *c, unsigned long line, const char *fmt, ...)
{
    kw_vfile_result_t r = {.kind = KW_VFILE_ERROR, .line = line};
    c->stats->n_failed++;
    va_list ap;
    va_start(ap, fmt);
    vemit(c, &r, fmt, ap);
    va_end(ap);
}

/* An error from an engine or parse call, counted: `<context>: <diag or error text>`, the
 * context formatted from fmt. KW_EUNSUPPORTED becomes the one UNSUPPORTED result of the
 * file (its text is the diag's). */
static void fail_rc(vctx_t *c, int rc, const kw_diag_t *d, unsigned long line, const char *fmt, ...)
    KW_PRINTF(5, 6);
static void fail_rc(vctx_t *c, int rc, const kw_diag_t *d, unsigned long line, const char *fmt, ...)
{
    if (rc == KW_EUNSUPPORTED) {
        if (!c->stats->unsupported) {
            kw_vfile_result_t r = {.kind = KW_VFILE_UNSUPPORTED, .line = line};
            emit(c, &r, "%s", d->msg[0] ? d->msg : kw_strerror(rc));
        }
        c->stats->unsupported = true;
        c->stats->n_failed++;
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    char *context = vformat(fmt, ap);
    va_end(ap);
    failf(c, line, "%s: %s", context ? context : k_oom_text, d->msg[0] ? d->msg : kw_strerror(rc));
    kw_free(context);
}

/* ---- YAML access ---- */

static kw_str_t scalar(yaml_node_t *n)
{
    return (kw_str_t){(const char *)n->data.scalar.value, n->data.scalar.length};
}

static bool is_null(yaml_node_t *n)
{
    if (!n)
        return true;
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    kw_str_t s = scalar(n);
    return s.len == 0 || kw_str_eq_c(s, "~") || kw_str_eq_c(s, "null") || kw_str_eq_c(s, "Null") ||
           kw_str_eq_c(s, "NULL");
}

static unsigned long node_line(yaml_node_t *n)
{
    return (unsigned long)n->start_mark.line + 1;
}

/* Reads a whole file into a NUL-terminated kw_malloc'd buffer; 0 or a negative errno. */
static int read_file(const char *path, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    kw_buf_t b;
    kw_buf_init(&b);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        kw_buf_append(&b, chunk, n);
    int err = ferror(f) ? EIO : 0;
    fclose(f);
    if (b.failed)
        err = ENOMEM;
    if (err) {
        kw_buf_free(&b);
        return -err;
    }
    kw_buf_append(&b, "", 0);
    *out = b.ptr ? b.ptr : kw_strndup("", 0);
    *len = b.len;
    return *out ? 0 : -ENOMEM;
}

/* ---- the document ---- */

static int load_schema(vctx_t *c, kw_str_t text, unsigned long line)
{
    kw_diag_t d;
    kw_diag_clear(&d);
    int rc = kw_engine_set_schema(c->x.e, text, NULL, &d);
    if (rc == KW_EUNSUPPORTED)
        fail_rc(c, rc, &d, line, "%s", "schema");
    else if (rc != KW_OK)
        failf(c, line, "schema:%u:%u: %s", d.line, d.col, d.msg[0] ? d.msg : kw_strerror(rc));
    return rc;
}

static int load_relationships(vctx_t *c, kw_str_t text, unsigned long first_line)
{
    size_t line = 0, p = 0;
    while (p < text.len) {
        size_t q = p;
        while (q < text.len && text.ptr[q] != '\n')
            q++;
        kw_str_t s = kw__vfile_trim((kw_str_t){text.ptr + p, q - p});
        line++;
        p = q + 1;
        if (s.len == 0 || (s.len >= 2 && s.ptr[0] == '/' && s.ptr[1] == '/'))
            continue;
        kw_diag_t d;
        kw_diag_clear(&d);
        kw_update_t up = {.op = KW_OP_TOUCH};
        int rc = kw_rel_parse(s, &up.rel, &d);
        if (rc != KW_OK) {
            fail_rc(c, rc, &d, first_line, "relationship %lu (\"%.*s\"), column %u",
                    (unsigned long)line, KW_STR_FMT(s), d.col);
            return rc;
        }
        /* SpiceDB refuses a relationship written twice (whatever its caveat or expiry). */
        kw_precondition_t fresh = {
            .must_match = false,
            .filter = {.resource_type = up.rel.resource.type,
                       .resource_id = up.rel.resource.id,
                       .relation = up.rel.relation,
                       .has_subject = true,
                       .subject_type = up.rel.subject.type,
                       .subject_id = up.rel.subject.id,
                       .subject_relation_set = true,
                       .subject_relation = up.rel.subject.relation},
        };
        /* As if a store had committed it at the next revision: a validation file may
         * hold relationships that expired already (SpiceDB loads them, and they are
         * invisible), which a live write refuses. */
        rc = kw_engine_write(c->x.e, &up, 1, &fresh, 1, kw_engine_revision(c->x.e) + 1, NULL, &d);
        if (rc == KW_EPRECOND) {
            failf(c, first_line, "relationship %lu (\"%.*s\"): found repeated relationship",
                  (unsigned long)line, KW_STR_FMT(s));
            return KW_EINVAL;
        }
        if (rc != KW_OK) {
            fail_rc(c, rc, &d, first_line, "relationship %lu (\"%.*s\")", (unsigned long)line,
                    KW_STR_FMT(s));
            return rc;
        }
    }
    return KW_OK;
}

/* The three kinds of assertion and the answer each wants. */
typedef enum want {
    WANT_TRUE,
    WANT_FALSE,
    WANT_CAVEATED,
} want_t;

static const char *const k_assert_kind[] = {"assertTrue", "assertFalse", "assertCaveated"};

/* Splits `res#perm@subject with {context}` at the first " with " (as SpiceDB does): the
 * relationship text and the context (len 0: none), both trimmed. */
static void split_context(kw_str_t s, kw_str_t *rel, kw_str_t *ctx)
{
    *rel = s;
    *ctx = KW_STR_NULL;
    for (size_t i = 0; i + 6 <= s.len; i++)
        if (memcmp(s.ptr + i, " with ", 6) == 0) {
            *rel = kw__vfile_trim((kw_str_t){s.ptr, i});
            *ctx = kw__vfile_trim((kw_str_t){s.ptr + i + 6, s.len - i - 6});
            return;
        }
}

/* Checks res#perm@subject with the request context `ctx` (len 0: none): *got is the
 * answer as the kind of assertion it would satisfy; with a conditional answer, the
 * missing parameter names go to `missing`. */
static int assertion_check(vctx_t *c, const kw_rel_t *r, kw_str_t ctx, want_t *got,
                           kw_buf_t *missing, kw_diag_t *d)
{
    kw_check_result_t res;
    int rc = kw_engine_check_ctx(c->x.e, r->resource, r->relation, r->subject, ctx, &res, missing,
                                 NULL, d);
    if (rc == KW_OK)
        *got = res == KW_CHECK_YES ? WANT_TRUE : res == KW_CHECK_NO ? WANT_FALSE : WANT_CAVEATED;
    return rc;
}

static int run_assertion(vctx_t *c, want_t want, yaml_node_t *n)
{
    const char *kind = k_assert_kind[want];
    if (n->type != YAML_SCALAR_NODE) {
        failf(c, node_line(n), "line %lu: each %s entry must be a string", node_line(n), kind);
        return KW_EINVAL;
    }
    kw_str_t s = kw__vfile_trim(scalar(n)), rel_text, ctx;
    split_context(s, &rel_text, &ctx);
    kw_diag_t d;
    kw_diag_clear(&d);
    kw_rel_t r;
    c->stats->n_checks++;
    int rc = kw_rel_parse(rel_text, &r, &d);
    if (rc != KW_OK) {
        fail_rc(c, rc, &d, node_line(n), "%s error: %.*s (column %u)", kind, KW_STR_FMT(s), d.col);
        return rc;
    }
    if (r.caveat.len > 0 || r.expires_at != 0) {
        failf(c, node_line(n),
              "%s error: %.*s: cannot specify %s on an assertion (give the "
              "check's context after ` with `)",
              kind, KW_STR_FMT(s), r.caveat.len > 0 ? "a caveat" : "an expiration");
        return KW_EINVAL;
    }
    if (ctx.len > 0 && (rc = kw_rel_context_check(ctx, &d)) != KW_OK) {
        fail_rc(c, rc, &d, node_line(n), "%s error: %.*s: the context after ` with ` (column %u)",
                kind, KW_STR_FMT(s), d.col);
        return rc;
    }
    want_t got;
    kw_buf_t missing;
    kw_buf_init(&missing);
    rc = assertion_check(c, &r, ctx, &got, &missing, &d);
    if (rc != KW_OK) {
        kw_buf_free(&missing);
        fail_rc(c, rc, &d, node_line(n), "%s error: %.*s", kind, KW_STR_FMT(s));
        return rc;
    }
    kw_vfile_result_t out = {
        .kind = want == WANT_TRUE    ? KW_VFILE_ASSERT_TRUE
                : want == WANT_FALSE ? KW_VFILE_ASSERT_FALSE
                                     : KW_VFILE_ASSERT_CAVEATED,
        .passed = got == want,
        .line = node_line(n),
        .what = s,
    };
    if (out.passed) {
        emit(c, &out, "%s passed: %.*s", kind, KW_STR_FMT(s));
    } else {
        c->stats->n_failed++;
        static const char *const answer[] = {"yes", "no", "conditional"};
        bool names = got == WANT_CAVEATED && !missing.failed && missing.len > 0;
        emit(c, &out, "%s failed: %.*s (the check answered %s%s%.*s)", kind, KW_STR_FMT(s),
             answer[got], names ? ": missing " : "", names ? (int)missing.len : 0,
             names ? missing.ptr : "");
    }
    kw_buf_free(&missing);
    return KW_OK;
}

static int run_assertions(vctx_t *c, yaml_document_t *doc, yaml_node_t *n)
{
    if (is_null(n))
        return KW_OK;
    if (n->type != YAML_MAPPING_NODE) {
        failf(c, node_line(n),
              "line %lu: assertions must be a map with assertTrue / assertFalse lists",
              node_line(n));
        return KW_EINVAL;
    }
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key);
        yaml_node_t *v = yaml_document_get_node(doc, p->value);
        if (!k || k->type != YAML_SCALAR_NODE) {
            failf(c, node_line(n), "line %lu: assertions keys must be strings", node_line(n));
            return KW_EINVAL;
        }
        kw_str_t key = scalar(k);
        want_t want;
        if (kw_str_eq_c(key, "assertTrue")) {
            want = WANT_TRUE;
        } else if (kw_str_eq_c(key, "assertFalse")) {
            want = WANT_FALSE;
        } else if (kw_str_eq_c(key, "assertCaveated")) {
            want = WANT_CAVEATED;
        } else {
            failf(c, node_line(k),
                  "line %lu: unknown assertion kind \"%.*s\" (use assertTrue, assertFalse or "
                  "assertCaveated)",
                  node_line(k), KW_STR_FMT(key));
            return KW_EINVAL;
        }
        if (is_null(v))
            continue;
        if (v->type != YAML_SEQUENCE_NODE) {
            failf(c, node_line(v), "line %lu: %.*s must be a list", node_line(v), KW_STR_FMT(key));
            return KW_EINVAL;
        }
        for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
             it++) {
            yaml_node_t *a = yaml_document_get_node(doc, *it);
            if (!a)
                continue;
            int rc = run_assertion(c, want, a);
            if (rc == KW_EUNSUPPORTED || rc == KW_ENOMEM)
                return rc;
        }
    }
    return KW_OK;
}

/* The bracketed subjects listed for one key, in canonical text, into want. */
static int expected_list(vctx_t *c, yaml_document_t *doc, kw_str_t key, yaml_node_t *v,
                         kw_strset_t *want)
{
    int rc = KW_OK;
    for (yaml_node_item_t *it = is_null(v) ? NULL : v->data.sequence.items.start;
         rc == KW_OK && it && it < v->data.sequence.items.top; it++) {
        yaml_node_t *e = yaml_document_get_node(doc, *it);
        if (!e || e->type != YAML_SCALAR_NODE) {
            failf(c, node_line(v), "line %lu: expected relations must be strings", node_line(v));
            return KW_EINVAL;
        }
        kw_diag_t d;
        kw_diag_clear(&d);
        char *t = NULL;
        rc = kw__vfile_expected_subject(c->x.arena, scalar(e), &t, &d);
        if (rc == KW_OK)
            rc = kw__strset_add(want, t);
        if (rc != KW_OK) /* an out-of-memory here must count as a failure too */
            fail_rc(c, rc, &d, node_line(e), "validation of %.*s (line %lu)", KW_STR_FMT(key),
                    node_line(e));
    }
    return rc;
}

/* Compares want with got: one result per differing subject (the entry counts once), or
 * one passed result. */
static void expected_compare(vctx_t *c, kw_str_t key, unsigned long line, const kw_strset_t *want,
                             const kw_strset_t *got)
{
    bool ok = true;
    for (int pass = 0; pass < 2; pass++) {
        const kw_strset_t *from = pass == 0 ? want : got, *in = pass == 0 ? got : want;
        for (size_t i = 0; i < from->n; i++) {
            if (kw__strset_has(in, from->v[i]))
                continue;
            if (ok)
                c->stats->n_failed++;
            ok = false;
            kw_vfile_result_t r = {.kind = KW_VFILE_EXPECTED,
                                   .line = line,
                                   .what = key,
                                   .subject = kw_str_c(from->v[i]),
                                   .missing = pass == 0};
            if (pass == 0)
                emit(c, &r, "validation failed for %.*s: expected subject [%s] was not found",
                     KW_STR_FMT(key), from->v[i]);
            else
                emit(c, &r, "validation failed for %.*s: found subject [%s] which is not listed",
                     KW_STR_FMT(key), from->v[i]);
        }
    }
    if (ok) {
        kw_vfile_result_t r = {
            .kind = KW_VFILE_EXPECTED, .passed = true, .line = line, .what = key};
        emit(c, &r, "validation of %.*s matched", KW_STR_FMT(key));
    }
}

static int run_expected(vctx_t *c, yaml_document_t *doc, yaml_node_t *k, yaml_node_t *v)
{
    kw_str_t key = kw__vfile_trim(scalar(k));
    kw_object_t obj;
    kw_str_t rel;
    c->stats->n_checks++;
    c->stats->n_expected++;
    if (kw__vfile_parse_key(key, &obj, &rel) != KW_OK) {
        failf(c, node_line(k), "line %lu: validation key \"%.*s\" must be `type:id#relation`",
              node_line(k), KW_STR_FMT(key));
        return KW_EINVAL;
    }
    if (!is_null(v) && v->type != YAML_SEQUENCE_NODE) {
        failf(c, node_line(v), "line %lu: the expected relations of %.*s must be a list",
              node_line(v), KW_STR_FMT(key));
        return KW_EINVAL;
    }
    kw_strset_t want = {0}, got = {0};
    kw_sset_t found = {0};
    int rc = expected_list(c, doc, key, v, &want);
    if (rc == KW_OK) {
        kw_diag_t d;
        kw_diag_clear(&d);
        c->x.expansions = 0;
        rc = kw__vfile_expand(&c->x, obj, rel, &found, &d);
        if (rc == KW_OK)
            rc = kw__sset_texts(c->x.arena, &found, &got);
        if (rc != KW_OK)
            fail_rc(c, rc, &d, node_line(k), "validation of %.*s", KW_STR_FMT(key));
    }
    if (rc == KW_OK)
        expected_compare(c, key, node_line(k), &want, &got);
    kw__strset_free(&want);
    kw__strset_free(&got);
    kw__sset_free(&found);
    return rc;
}

static int run_validation(vctx_t *c, yaml_document_t *doc, yaml_node_t *n)
{
    if (is_null(n))
        return KW_OK;
    if (n->type != YAML_MAPPING_NODE) {
        failf(c, node_line(n),
              "line %lu: validation must be a map from `type:id#relation` to a list", node_line(n));
        return KW_EINVAL;
    }
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key);
        yaml_node_t *v = yaml_document_get_node(doc, p->value);
        if (!k || k->type != YAML_SCALAR_NODE) {
            failf(c, node_line(n), "line %lu: validation keys must be strings", node_line(n));
            return KW_EINVAL;
        }
        int rc = run_expected(c, doc, k, v);
        if (rc == KW_EUNSUPPORTED || rc == KW_ENOMEM)
            return rc;
    }
    return KW_OK;
}

/* Reads `schemaFile` relative to the validation file's folder. */
static int read_schema_file(vctx_t *c, kw_str_t name, char **out, size_t *len)
{
    const char *file = c->path ? c->path : "";
    const char *slash = strrchr(file, '/');
    char *path = name.len > 0 && name.ptr[0] == '/'
                     ? kw_arena_sprintf(c->x.arena, "%.*s", KW_STR_FMT(name))
                     : kw_arena_sprintf(c->x.arena, "%.*s%.*s", slash ? (int)(slash - file + 1) : 0,
                                        file, KW_STR_FMT(name));
    if (!path)
        return -ENOMEM;
    return read_file(path, out, len);
}

/* The top-level keys of a document. */
typedef struct vdoc {
    yaml_node_t *schema, *schema_file, *rels, *asserts, *valid;
} vdoc_t;

static bool document_keys(vctx_t *c, yaml_document_t *doc, yaml_node_t *root, vdoc_t *out)
{
    memset(out, 0, sizeof(*out));
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key);
        yaml_node_t *v = yaml_document_get_node(doc, p->value);
        kw_str_t key = k && k->type == YAML_SCALAR_NODE ? scalar(k) : KW_STR_NULL;
        if (kw_str_eq_c(key, "schema")) {
            out->schema = v;
        } else if (kw_str_eq_c(key, "schemaFile")) {
            out->schema_file = v;
        } else if (kw_str_eq_c(key, "relationships")) {
            out->rels = v;
        } else if (kw_str_eq_c(key, "assertions")) {
            out->asserts = v;
        } else if (kw_str_eq_c(key, "validation")) {
            out->valid = v;
        } else {
            unsigned long line = k ? node_line(k) : 0UL;
            failf(c, line,
                  "line %lu: unknown key \"%.*s\" (expected schema, schemaFile, "
                  "relationships, assertions or validation)",
                  line, KW_STR_FMT(key));
            return false;
        }
    }
    return true;
}

/* Loads the schema (inline or schemaFile) and the relationships into c->x.e. */
static int load_document(vctx_t *c, const vdoc_t *k)
{
    char *owned = NULL;
    kw_str_t text = KW_STR_NULL;
    yaml_node_t *src = k->schema;
    if (k->schema && k->schema->type == YAML_SCALAR_NODE) {
        text = scalar(k->schema);
    } else if (k->schema_file && k->schema_file->type == YAML_SCALAR_NODE) {
        src = k->schema_file;
        size_t len = 0;
        int err = read_schema_file(c, scalar(k->schema_file), &owned, &len);
        if (err != 0) {
            failf(c, node_line(k->schema_file), "schemaFile \"%.*s\": %s",
                  KW_STR_FMT(scalar(k->schema_file)), strerror(-err));
            return KW_EIO;
        }
        text = (kw_str_t){owned, len};
    } else {
        failf(c, 0, "%s", "the document has no schema (a `schema: |` text block)");
        return KW_EINVAL;
    }
    int rc = load_schema(c, text, node_line(src));
    kw_free(owned);
    if (rc != KW_OK || !k->rels || is_null(k->rels))
        return rc;
    if (k->rels->type != YAML_SCALAR_NODE) {
        failf(c, node_line(k->rels), "line %lu: relationships must be a text block, one per line",
              node_line(k->rels));
        return KW_EINVAL;
    }
    return load_relationships(c, scalar(k->rels), node_line(k->rels));
}

static void run_document(vctx_t *c, yaml_document_t *doc, yaml_node_t *root)
{
    if (is_null(root))
        return;
    if (root->type != YAML_MAPPING_NODE) {
        failf(c, node_line(root),
              "line %lu: a validation document must be a map (schema, relationships, "
              "assertions, validation)",
              node_line(root));
        return;
    }
    vdoc_t k;
    if (!document_keys(c, doc, root, &k))
        return;
    if (kw_engine_new(&c->x.e) != KW_OK) {
        failf(c, 0, "%s", "out of memory");
        return;
    }
    if (load_document(c, &k) == KW_OK && run_assertions(c, doc, k.asserts) != KW_EUNSUPPORTED)
        (void)run_validation(c, doc, k.valid);
    kw_engine_free(c->x.e);
    c->x.e = NULL;
}

/* One document of the stream: false at its end or on a YAML error (reported). */
static bool next_document(vctx_t *c, yaml_parser_t *parser)
{
    yaml_document_t doc;
    if (!yaml_parser_load(parser, &doc)) {
        kw_vfile_result_t r = {.kind = KW_VFILE_SYNTAX,
                               .line = (unsigned long)parser->problem_mark.line + 1,
                               .col = (unsigned long)parser->problem_mark.column + 1};
        c->stats->n_failed++;
        c->doc++;
        emit(c, &r, "YAML error: %s%s%s", parser->problem ? parser->problem : "malformed document",
             parser->context ? " " : "", parser->context ? parser->context : "");
        return false;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root) {
        yaml_document_delete(&doc);
        return false;
    }
    c->doc++;
    c->stats->n_docs++;
    run_document(c, &doc, root);
    yaml_document_delete(&doc);
    kw_arena_reset(c->x.arena);
    return !c->stats->unsupported;
}

int kw_vfile_run(kw_str_t text, const char *path, kw_vfile_on_result on_result, void *ud,
                 kw_vfile_stats_t *stats, kw_diag_t *diag)
{
    memset(stats, 0, sizeof(*stats));
    vctx_t c = {.path = path, .on_result = on_result, .ud = ud, .stats = stats};
    yaml_parser_t parser;
    c.x.arena = kw_arena_new(0);
    if (!c.x.arena)
        goto fail_arena;
    if (!yaml_parser_initialize(&parser))
        goto fail_parser;
    yaml_parser_set_input_string(&parser, (const unsigned char *)(text.ptr ? text.ptr : ""),
                                 text.len);
    while (next_document(&c, &parser))
        ;
    yaml_parser_delete(&parser);
    kw__strset_free(&c.x.stack);
    kw_arena_free(c.x.arena);
    return KW_OK;

fail_parser:
    kw_arena_free(c.x.arena);
fail_arena:
    return kw_diag_set(diag, KW_ENOMEM, 0, 0, "out of memory");
}

int kw_vfile_run_file(const char *path, kw_vfile_on_result on_result, void *ud,
                      kw_vfile_stats_t *stats, kw_diag_t *diag)
{
    char *text = NULL;
    size_t len = 0;
    memset(stats, 0, sizeof(*stats));
    int err = read_file(path, &text, &len);
    if (err != 0)
        return kw_diag_set(diag, err == -ENOMEM ? KW_ENOMEM : KW_EIO, 0, 0, "cannot read: %s",
                           strerror(-err));
    int rc = kw_vfile_run((kw_str_t){text, len}, path, on_result, ud, stats, diag);
    kw_free(text);
    return rc;
}
