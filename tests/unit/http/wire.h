/*
 * tests/unit/http/wire.h - the raw HTTP/1.1 test client (wire.c). Sockets have 10 s
 * send/receive timeouts; responses are Content-Length framed.
 */
#ifndef KW_TESTS_HTTP_WIRE_H
#define KW_TESTS_HTTP_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct resp {
    int status;
    char head[16384];
    char *body;
    size_t body_len;
} resp_t;

/* A connected loopback socket, or -1. */
int dial(uint16_t port);
int send_all(int fd, const void *buf, size_t len);
/* Case-insensitive header lookup in r->head; copies the value into out. */
const char *hdr(const resp_t *r, const char *name, char *out, size_t cap);
void resp_free(resp_t *r);
/* Reads one response (no body for HEAD). 0 on success. */
int read_resp(int fd, resp_t *r, bool head_req);
/* One request on a fresh connection. */
int do_req(uint16_t port, const char *raw, resp_t *r);
/* GET path with Connection: close on a fresh connection. */
int get(uint16_t port, const char *path, resp_t *r);

#endif
