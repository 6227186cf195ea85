/* tests/unit/api/test_inst.c - see test_inst.h. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "test_inst.h"

int kw_ti_load_one(const kw_rel_t *rel, void *ud)
{
    kw_update_t u = {KW_OP_TOUCH, *rel};
    return kw_engine_write(ud, &u, 1, NULL, 0, 0, NULL, NULL) == KW_OK ? 0 : 1;
}

static int open_url(kw_ti_t *in, const char *url)
{
    kw_revision_t r0 = 0;
    kw_diag_t d;
    kw_diag_clear(&d);
    if (kw_store_open(url, &in->store, &d) != KW_OK) {
        fprintf(stderr, "  open %s: %s\n", url, d.msg);
        return 0;
    }
    if (kw_engine_new(&in->engine) != KW_OK ||
        kw_engine_set_schema(in->engine, kw_str_c(kw_api_default_schema), NULL, NULL) != KW_OK ||
        kw_store_load_relationships(in->store, kw_ti_load_one, in->engine, &r0) != KW_OK ||
        kw_keyring_new(kw_str_c("unit-test-token-secret"),
                       kw_str_c("unit-test-master-key-of-32-bytes-at-least"),
                       &in->keyring) != KW_OK ||
        kw_api_new(in->engine, in->store, in->keyring, &in->api) != KW_OK)
        return 0;
    return kw_api_follow_start(in->api, r0, &d) == KW_OK;
}

int kw_ti_open(kw_ti_t *in, const char *url)
{
    memset(in, 0, sizeof(*in));
    return open_url(in, url);
}

int kw_ti_sqlite(kw_ti_t *in, const char *tag)
{
    memset(in, 0, sizeof(*in));
    snprintf(in->path, sizeof(in->path), "/tmp/kw_%s_%ld.db", tag, (long)getpid());
    unlink(in->path);
    char url[160];
    snprintf(url, sizeof(url), "sqlite:%s", in->path);
    return open_url(in, url);
}

void kw_ti_close(kw_ti_t *in)
{
    kw_api_free(in->api);
    if (in->engine)
        kw_engine_free(in->engine);
    if (in->keyring)
        kw_keyring_free(in->keyring);
    if (in->store)
        kw_store_close(in->store);
    if (in->path[0])
        unlink(in->path);
}
