/*
 * api/forward_int.h - what the forward ingress (forward.c) shares with its relay
 * (forward_relay.c). Not a public header.
 *
 * Ownership: settings are read once from the environment and live for the process.
 * Threads: the relay runs on HTTP pool workers, many at once; counters are atomics.
 */
#ifndef KW_API_FORWARD_INT_H
#define KW_API_FORWARD_INT_H

#include <stdatomic.h>

#include "api_int.h"

/* Outcomes counted in keyward_forward_requests_total{outcome}. */
enum {
    KW__FWD_RELAYED = 0,
    KW__FWD_NOT_FOUND,
    KW__FWD_KEY_NOT_FOUND,
    KW__FWD_UNAUTHORIZED,
    KW__FWD_BAD_REQUEST,
    KW__FWD_NO_AUTH,
    KW__FWD_REPLAY,
    KW__FWD_CHALLENGE,
    KW__FWD_DISALLOWED,
    KW__FWD_UPSTREAM_ERROR,
    KW__FWD_UPSTREAM_TIMEOUT,
    KW__FWD_TOO_LARGE,
    KW__FWD_BUSY,
    KW__FWD_ERROR,
    KW__FWD_N
};

#define KW__FWD_MAX_ALLOW 64

/* One KEYWARD_FORWARD_ALLOW entry: a host name, or a CIDR (IPv4 or IPv6). */
typedef struct kw__fwd_allow {
    bool is_cidr;
    char host[256];
    int family; /* AF_INET / AF_INET6 */
    uint8_t addr[16];
    unsigned prefix;
} kw__fwd_allow_t;

typedef struct kw__fwd_settings {
    long connect_timeout_ms; /* KEYWARD_FORWARD_CONNECT_TIMEOUT_MS, default 5000 */
    long timeout_ms;         /* KEYWARD_FORWARD_TIMEOUT_MS (whole relay), default 30000 */
    size_t max_response;     /* KEYWARD_FORWARD_MAX_RESPONSE_BYTES, default 10 MiB */
    unsigned max_inflight;   /* KEYWARD_FORWARD_MAX_INFLIGHT, default 64 */
    unsigned threads;        /* KEYWARD_FORWARD_THREADS (relay threads), default 16 */
    kw__fwd_allow_t allow[KW__FWD_MAX_ALLOW];
    size_t n_allow;
} kw__fwd_settings_t;

/* The settings (read on first use; bad entries of KEYWARD_FORWARD_ALLOW are logged and
 * skipped). */
const kw__fwd_settings_t *kw__fwd_settings(void);
void kw__fwd_count(int outcome);
/* Relays req to ag->acp_url + "/" + the path tail + "?" + query; writes the answer. */
void kw__fwd_relay(kw_http_req_t *req, kw_http_resp_t *resp, const kw_agent_t *ag, const char *via);
/* Is the address (sockaddr) one the relay may connect to, given the URL's host? */
bool kw__fwd_addr_allowed(const kw__fwd_settings_t *s, const char *url_host, const void *sa,
                          size_t sa_len);
/* /metrics text of the ingress. */
void kw__api_forward_metrics(kw_buf_t *out);
/* curl_global_init / cleanup (kw_api_new / kw_api_free). */
int kw__api_forward_init(void);
void kw__api_forward_fini(void);

#endif
