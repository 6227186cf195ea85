/*
 * tests/unit/http/wire.c - a tiny raw HTTP/1.1 client over POSIX sockets for the http
 * tests: what is asserted is exactly what goes over the wire.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "wire.h"

int dial(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int send_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Case-insensitive header lookup in r->head; copies the value into out. */
const char *hdr(const resp_t *r, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    for (const char *p = strstr(r->head, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n")) {
        const char *line = p + 2;
        if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ')
                v++;
            const char *e = strstr(v, "\r\n");
            size_t l = e ? (size_t)(e - v) : strlen(v);
            if (l >= cap)
                l = cap - 1;
            memcpy(out, v, l);
            out[l] = '\0';
            return out;
        }
    }
    return NULL;
}

void resp_free(resp_t *r)
{
    free(r->body);
    r->body = NULL;
}

/* Reads one response (Content-Length framed; no body for HEAD). 0 on success. */
int read_resp(int fd, resp_t *r, bool head_req)
{
    memset(r, 0, sizeof(*r));
    size_t hl = 0;
    char *end = NULL;
    while (!end) {
        if (hl + 1 >= sizeof(r->head))
            return -1;
        ssize_t n = recv(fd, r->head + hl, 1, 0); /* byte-wise: never over-read */
        if (n <= 0)
            return -1;
        hl += (size_t)n;
        r->head[hl] = '\0';
        end = hl >= 4 ? strstr(r->head + hl - 4, "\r\n\r\n") : NULL;
    }
    if (sscanf(r->head, "HTTP/1.1 %d", &r->status) != 1)
        return -1;
    char cl[32];
    size_t len = 0;
    if (!head_req && hdr(r, "Content-Length", cl, sizeof(cl)))
        len = (size_t)strtoull(cl, NULL, 10);
    r->body = calloc(1, len + 1);
    if (!r->body)
        return -1;
    while (r->body_len < len) {
        ssize_t n = recv(fd, r->body + r->body_len, len - r->body_len, 0);
        if (n <= 0)
            return -1;
        r->body_len += (size_t)n;
    }
    return 0;
}

/* One request on a fresh connection. */
int do_req(uint16_t port, const char *raw, resp_t *r)
{
    int fd = dial(port);
    if (fd < 0)
        return -1;
    int rc = send_all(fd, raw, strlen(raw));
    if (rc == 0)
        rc = read_resp(fd, r, strncmp(raw, "HEAD ", 5) == 0);
    close(fd);
    return rc;
}

int get(uint16_t port, const char *path, resp_t *r)
{
    char raw[2048];
    snprintf(raw, sizeof(raw), "GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", path);
    return do_req(port, raw, r);
}
