/*
 * tests/unit/api/default_schema_test.c - the three copies of the default schema stay one
 * (tag-kw-agentex): src/api/agentex.zed (the file users read and pass to --schema),
 * kw_api_default_schema (src/api/agentex_zed.c, compiled in) and the schema block of
 * tests/fixtures/agentex.validation.yaml (the assertions the conformance test and the
 * e2e suite replay).
 */
#include "kw_test.h"

#include "api/api.h"

#include <stdbool.h>

/* Reads <rel> of the source tree (KW_SOURCE_DIR, else the build dir's parent) into a
 * NUL-terminated buffer (kw_free it); NULL when it cannot. */
static char *read_source(const char *rel, size_t *len)
{
    const char *root = getenv("KW_SOURCE_DIR");
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", root && *root ? root : "..", rel);
    char *buf = NULL;
    return kw_read_file(path, 0, &buf, len) == KW_OK ? buf : NULL;
}

/* Length of s without its trailing newlines. */
static size_t trim_newlines(const char *s, size_t len)
{
    while (len > 0 && s[len - 1] == '\n')
        len--;
    return len;
}

/* Writes into out (capacity cap) the literal block of the top-level key "schema: |+" of a
 * YAML text: its lines with the two-space indentation removed, up to the next top-level
 * key. False when there is no such block or it does not fit. */
static bool yaml_schema_block(const char *yaml, char *out, size_t cap, size_t *len)
{
    const char *p = strstr(yaml, "\nschema: |+\n");
    if (!p)
        return false;
    p += strlen("\nschema: |+\n");
    size_t n = 0;
    while (*p && (*p == '\n' || strncmp(p, "  ", 2) == 0)) {
        const char *eol = strchr(p, '\n');
        size_t l = eol ? (size_t)(eol - p) : strlen(p);
        const char *text = l >= 2 ? p + 2 : p + l;
        size_t tl = l >= 2 ? l - 2 : 0;
        if (n + tl + 1 >= cap)
            return false;
        memcpy(out + n, text, tl);
        n += tl;
        out[n++] = '\n';
        if (!eol)
            break;
        p = eol + 1;
    }
    out[n] = '\0';
    *len = n;
    return true;
}

KW_TEST(default_schema_equals_the_zed_file)
{
    size_t len = 0;
    char *zed = read_source("src/api/agentex.zed", &len);
    KW_ASSERT(zed != NULL);
    bool same =
        len == strlen(kw_api_default_schema) && memcmp(zed, kw_api_default_schema, len) == 0;
    kw_free(zed);
    KW_ASSERT(same);
}

KW_TEST(default_schema_equals_the_validation_fixture_schema)
{
    size_t zlen = 0, ylen = 0, blen = 0;
    static char block[65536];
    char *zed = read_source("src/api/agentex.zed", &zlen);
    char *yaml = read_source("tests/fixtures/agentex.validation.yaml", &ylen);
    bool found = zed && yaml && yaml_schema_block(yaml, block, sizeof(block), &blen);
    bool same = found && trim_newlines(block, blen) == trim_newlines(zed, zlen) &&
                memcmp(block, zed, trim_newlines(zed, zlen)) == 0;
    kw_free(zed);
    kw_free(yaml);
    KW_ASSERT(found);
    KW_ASSERT(same);
}
