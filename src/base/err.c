/* base/err.c - lookups over the KW_ERRNO_MAP table. */
#include "err.h"

const char *kw_strerror(int code)
{
    switch (code) {
    case KW_OK:
        return "ok";
#define KW__ERR_MSG(name, c, http, msg)                                                            \
    case (c):                                                                                      \
        return msg;
        KW_ERRNO_MAP(KW__ERR_MSG)
#undef KW__ERR_MSG
    default:
        return "unknown error";
    }
}

const char *kw_err_name(int code)
{
    switch (code) {
    case KW_OK:
        return "KW_OK";
#define KW__ERR_NAME(name, c, http, msg)                                                           \
    case (c):                                                                                      \
        return "KW_" #name;
        KW_ERRNO_MAP(KW__ERR_NAME)
#undef KW__ERR_NAME
    default:
        return "KW_EUNKNOWN";
    }
}

int kw_err_http_status(int code)
{
    switch (code) {
    case KW_OK:
        return 200;
#define KW__ERR_HTTP(name, c, http, msg)                                                           \
    case (c):                                                                                      \
        return http;
        KW_ERRNO_MAP(KW__ERR_HTTP)
#undef KW__ERR_HTTP
    default:
        return 500;
    }
}
