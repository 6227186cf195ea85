/*
 * base/err.h - keyward's error codes, declared once.
 *
 * Every fallible function returns KW_OK (0) or a negative KW_E* code. The
 * X-macro below is the single source for the code's name, the HTTP status an
 * API maps it to, and a client-safe default message (tag-kw-errors). kw_strerror
 * and kw_err_name (err.c) read it; the api maps codes to answers route by route
 * (api/common.c for the contract's routes, api/v1_codec.c for /v1).
 */
#ifndef KW_BASE_ERR_H
#define KW_BASE_ERR_H

#define KW_ERRNO_MAP(X)                                                                            \
    X(EINVAL, -1, 400, "invalid argument")                                                         \
    X(ENOMEM, -2, 500, "out of memory")                                                            \
    X(ESCHEMA, -3, 400, "invalid schema")                                                          \
    X(ENOTFOUND, -4, 404, "not found")                                                             \
    X(EEXISTS, -5, 409, "already exists")                                                          \
    X(EPRECOND, -6, 412, "precondition failed")                                                    \
    X(EDEPTH, -7, 500, "maximum recursion depth exceeded")                                         \
    X(ECYCLE, -8, 500, "cycle through an exclusion")                                               \
    X(EUNSUPPORTED, -9, 400, "not supported yet")                                                  \
    X(EIO, -10, 500, "input/output error")                                                         \
    X(EDB, -11, 503, "database unavailable")                                                       \
    X(ELIMIT, -12, 400, "limit exceeded")                                                          \
    X(EAUTH, -13, 401, "unauthorized")                                                             \
    X(EFORBIDDEN, -14, 403, "forbidden")                                                           \
    X(ECONFLICT, -15, 409, "conflict")                                                             \
    X(EINTERNAL, -16, 500, "internal error")                                                       \
    X(ETIMEOUT, -17, 503, "timed out")                                                             \
    X(ETOOLARGE, -18, 413, "too large")                                                            \
    X(EPRUNED, -19, 503, "changes no longer in the changelog (pruned)")                            \
    X(EBUDGET, -20, 429, "query exceeds its budget")                                               \
    X(EAGAIN, -21, 503, "not yet: try again")                                                      \
    X(EEXPIRED, -22, 400, "revision outside the snapshot window")

enum kw_err {
    KW_OK = 0,
#define KW__ERR_ENUM(name, code, http, msg) KW_##name = (code),
    KW_ERRNO_MAP(KW__ERR_ENUM)
#undef KW__ERR_ENUM
};

/* Client-safe text for a code ("unknown error" for an unknown code). Static storage. */
const char *kw_strerror(int code);
/* The code's symbolic name, e.g. "KW_ENOMEM". Static storage. */
const char *kw_err_name(int code);
/* The HTTP status an API should answer for a code (500 for unknown). */
int kw_err_http_status(int code);

#endif
