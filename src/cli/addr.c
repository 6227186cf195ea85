/*
 * cli/addr.c - the HOST:PORT of the listening flags, one parser for every subcommand
 * (serve's --listen and --grpc-listen, serve-testing's --http-addr, --grpc-addr and
 * --readonly-grpc-addr).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "cli.h"

bool kw_cli_parse_addr(const char *s, bool empty_host_any, char **host, uint16_t *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon || (colon == s && !empty_host_any))
        return false;
    const char *h = s;
    size_t hlen = (size_t)(colon - s);
    if (hlen && h[0] == '[') {
        if (hlen < 3 || h[hlen - 1] != ']')
            return false;
        h++;
        hlen -= 2;
    }
    char *end = NULL;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno || !end || *end || end == colon + 1 || p < 0 || p > 65535)
        return false;
    *host = hlen ? kw_strndup(h, hlen) : kw_strndup("0.0.0.0", 7);
    *port = (uint16_t)p;
    return *host != NULL;
}
