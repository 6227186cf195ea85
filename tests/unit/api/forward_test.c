/* tests/unit/api/forward_test.c - the relay's destination guard (api/forward_relay.c):
 * KEYWARD_FORWARD_ALLOW parsing, CIDR matching, host entries, and the addresses that are
 * never allowed whatever the list says. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "api/forward_int.h"
#include "kw_test.h"

static bool allowed(const kw__fwd_settings_t *s, const char *host, const char *ip)
{
    struct sockaddr_in a4;
    struct sockaddr_in6 a6;
    memset(&a4, 0, sizeof(a4));
    memset(&a6, 0, sizeof(a6));
    if (inet_pton(AF_INET, ip, &a4.sin_addr) == 1) {
        a4.sin_family = AF_INET;
        return kw__fwd_addr_allowed(s, host, &a4, sizeof(a4));
    }
    if (inet_pton(AF_INET6, ip, &a6.sin6_addr) != 1)
        return true; /* a typo in the test: fails the caller's negative checks loudly */
    a6.sin6_family = AF_INET6;
    return kw__fwd_addr_allowed(s, host, &a6, sizeof(a6));
}

KW_TEST(forward_destination_guard)
{
    /* read once per process: this test is the only one that reads the settings */
    setenv("KEYWARD_FORWARD_ALLOW",
           "10.0.0.0/8, 127.0.0.1,::1,hooks.example.com,0.0.0.0/0x,bad/8,169.254.0.0/16", 1);
    const kw__fwd_settings_t *s = kw__fwd_settings();
    KW_ASSERT_EQ(s->n_allow, 5); /* the two malformed entries are skipped */
    KW_ASSERT(allowed(s, "a", "10.1.2.3"));
    KW_ASSERT(!allowed(s, "a", "11.0.0.1"));
    KW_ASSERT(allowed(s, "a", "127.0.0.1"));
    KW_ASSERT(!allowed(s, "a", "127.0.0.2"));
    KW_ASSERT(allowed(s, "a", "::1"));
    KW_ASSERT(allowed(s, "a", "::ffff:10.9.9.9")); /* IPv4-mapped: judged as IPv4 */
    /* a listed host name: any address it resolves to, but never the forbidden ones */
    KW_ASSERT(allowed(s, "hooks.example.com", "93.184.216.34"));
    KW_ASSERT(allowed(s, "HOOKS.example.com", "93.184.216.34"));
    KW_ASSERT(!allowed(s, "other.example.com", "93.184.216.34"));
    const char *never[] = {"169.254.169.254", "169.254.1.1",   "0.0.0.0", "100.100.100.200",
                           "fe80::1",         "fd00:ec2::254", "::",      "::ffff:169.254.169.254",
                           "224.0.0.1"};
    for (size_t i = 0; i < KW_ARRAY_LEN(never); i++) {
        KW_ASSERT(!allowed(s, "hooks.example.com", never[i]));
        KW_ASSERT(!allowed(s, "a", never[i]));
    }
    KW_ASSERT_EQ(s->connect_timeout_ms, 5000);
    KW_ASSERT_EQ(s->timeout_ms, 30000);
}
