/*
 * api/errors.c - the shape of the errors the HTTP server produces itself (404, 405, 400,
 * 408, 413, 431, 503, ...), supplied to it as kw_http_config_t.error_fn: the contract's
 * {"detail": msg}, and under /v1 SpiceDB's HTTP gateway shape
 * {"detail": msg, "code": <gRPC code>, "message": msg, "details": []}; a wrong method there
 * is grpc-gateway's routing answer, 501 UNIMPLEMENTED "Method Not Allowed". The http module knows
 * nothing of SpiceDB; this file is where that knowledge lives for server-made errors.
 *
 * Threads: called on the server's loop thread and on workers; pure, never blocks.
 */
#include <string.h>

#include "api_int.h"

/* The gRPC status a SpiceDB gateway would carry with an HTTP status. */
static int grpc_code(int status)
{
    switch (status) {
    case 400:
    case 422:
        return 3; /* INVALID_ARGUMENT */
    case 401:
        return 16; /* UNAUTHENTICATED */
    case 403:
        return 7; /* PERMISSION_DENIED */
    case 404:
        return 5; /* NOT_FOUND */
    case 408:
    case 504:
        return 4; /* DEADLINE_EXCEEDED */
    case 409:
        return 6; /* ALREADY_EXISTS */
    case 413:
    case 429:
    case 431:
        return 8; /* RESOURCE_EXHAUSTED */
    case 405:
    case 501:
    case 505:
        return 12; /* UNIMPLEMENTED */
    case 503:
        return 14; /* UNAVAILABLE */
    default:
        return status >= 500 ? 13 : 9; /* INTERNAL : FAILED_PRECONDITION */
    }
}

bool kw__api_is_v1_path(kw_str_t path)
{
    return path.len >= 3 && memcmp(path.ptr, "/v1", 3) == 0 &&
           (path.len == 3 || path.ptr[3] == '/');
}

void kw__api_v1_error(kw_http_resp_t *resp, int status, const char *msg)
{
    kw_http_resp_error(resp, status, msg);
    if (resp->body.failed || resp->body.len == 0)
        return;
    resp->body.len--; /* drop the closing brace */
    kw_buf_printf(&resp->body, ", \"code\": %d, \"message\": ", grpc_code(status));
    kw_json_escape(&resp->body, kw_str_c(msg));
    kw_buf_puts(&resp->body, ", \"details\": []}");
}

void kw_api_http_error(const kw_http_req_t *req, int status, const char *msg, kw_http_resp_t *resp,
                       void *ud)
{
    (void)ud;
    if (kw__api_is_v1_path(req->path) && status == 405)
        kw__api_v1_error(resp, 501, "Method Not Allowed");
    else if (kw__api_is_v1_path(req->path))
        kw__api_v1_error(resp, status, msg);
    else
        kw_http_resp_error(resp, status, msg);
}
