/*
 * api/forward_relay.c - the relay of a verified forward request to the agent's acp_url,
 * through libcurl, and the server-side request forgery guard.
 *
 * SSRF: the destination is decided on the address curl is about to connect to
 * (CURLOPT_OPENSOCKETFUNCTION runs after resolution, for every address tried), so a name
 * that resolves differently later (DNS rebinding) cannot slip through. Allowed: an address
 * inside a CIDR of KEYWARD_FORWARD_ALLOW, or any address of a URL whose host is listed there
 * by name; never a link-local (169.254.0.0/16, fe80::/10), unspecified or cloud-metadata
 * address (100.100.100.200, fd00:ec2::254), whatever the list says. Unset list: nothing is
 * allowed. No proxies (they would connect for us), no redirects, http and https only.
 *
 * The request: method, raw body, headers minus hop-by-hop ones, `host`, `content-length`,
 * `expect` and keyward's own credentials (Authorization, X-Agent-API-Key,
 * X-Selected-Account-Id). The answer: the upstream's status, headers (minus hop-by-hop
 * ones and the framing the server sets itself) and body up to max_response bytes.
 * Unreachable -> 502, timed out -> 504, too large -> 502, disallowed -> 502, all as
 * {"detail": ...}.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>

#include "base/log.h"
#include "forward_int.h"

#define KW_MODULE "forward"

/* ---- settings ---- */

static kw__fwd_settings_t g_settings;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static long env_long(const char *name, long dflt, long lo, long hi)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return dflt;
    char *end = NULL;
    long n = strtol(v, &end, 10);
    if (*end || n < lo || n > hi) {
        kw_log(KW_LOG_WARN, KW_MODULE, "%s=%s ignored (%ld..%ld): using %ld", name, v, lo, hi,
               dflt);
        return dflt;
    }
    return n;
}

static bool parse_allow(const char *text, kw__fwd_allow_t *e)
{
    memset(e, 0, sizeof(*e));
    char buf[300];
    size_t n = strlen(text);
    if (n == 0 || n >= sizeof(buf))
        return false;
    memcpy(buf, text, n + 1);
    char *slash = strchr(buf, '/');
    if (slash)
        *slash = '\0';
    if (inet_pton(AF_INET, buf, e->addr) == 1) {
        e->family = AF_INET;
        e->prefix = 32;
    } else if (inet_pton(AF_INET6, buf, e->addr) == 1) {
        e->family = AF_INET6;
        e->prefix = 128;
    } else {
        if (slash || n >= sizeof(e->host))
            return false;
        for (size_t i = 0; i < n; i++) {
            char c = buf[i];
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '.'))
                return false;
        }
        memcpy(e->host, buf, n + 1);
        return true;
    }
    e->is_cidr = true;
    if (slash) {
        char *end = NULL;
        long p = strtol(slash + 1, &end, 10);
        if (!slash[1] || *end || p < 0 || p > (long)e->prefix)
            return false;
        e->prefix = (unsigned)p;
    }
    return true;
}

static void settings_load(void)
{
    kw__fwd_settings_t *s = &g_settings;
    s->connect_timeout_ms = env_long("KEYWARD_FORWARD_CONNECT_TIMEOUT_MS", 5000, 1, 600000);
    s->timeout_ms = env_long("KEYWARD_FORWARD_TIMEOUT_MS", 30000, 1, 3600000);
    s->max_response =
        (size_t)env_long("KEYWARD_FORWARD_MAX_RESPONSE_BYTES", 10L * 1024 * 1024, 1, 1L << 30);
    s->max_inflight = (unsigned)env_long("KEYWARD_FORWARD_MAX_INFLIGHT", 64, 1, 100000);
    s->threads = (unsigned)env_long("KEYWARD_FORWARD_THREADS", 16, 1, 1024);
    const char *allow = getenv("KEYWARD_FORWARD_ALLOW");
    if (!allow || !*allow) {
        kw_log(KW_LOG_INFO, KW_MODULE,
               "KEYWARD_FORWARD_ALLOW is unset: the forward ingress relays nowhere");
        return;
    }
    const char *p = allow;
    while (*p) {
        while (*p == ',' || *p == ' ')
            p++;
        const char *e = p;
        while (*e && *e != ',' && *e != ' ')
            e++;
        if (e > p) {
            char item[300];
            size_t n = (size_t)(e - p) < sizeof(item) - 1 ? (size_t)(e - p) : sizeof(item) - 1;
            memcpy(item, p, n);
            item[n] = '\0';
            if (s->n_allow == KW__FWD_MAX_ALLOW || !parse_allow(item, &s->allow[s->n_allow]))
                kw_log(KW_LOG_WARN, KW_MODULE, "KEYWARD_FORWARD_ALLOW entry '%s' ignored", item);
            else
                s->n_allow++;
        }
        p = e;
    }
}

const kw__fwd_settings_t *kw__fwd_settings(void)
{
    pthread_once(&g_once, settings_load);
    return &g_settings;
}

/* One easy handle per pool worker, kept across relays so its connection cache keeps
 * upstream connections open (keep-alive): a reused connection goes to an address that
 * passed the guard when it was opened, for the same host and port (the allow list does not
 * change while the process runs). Freed when the worker thread exits. */
static pthread_key_t g_handle_key;
static pthread_once_t g_key_once = PTHREAD_ONCE_INIT;
static bool g_key_ok;

static void handle_free(void *h)
{
    curl_easy_cleanup(h);
}

static void key_make(void)
{
    g_key_ok = pthread_key_create(&g_handle_key, handle_free) == 0;
}

/* This thread's handle, reset to no options; NULL on OOM. */
static CURL *thread_handle(bool *owned)
{
    pthread_once(&g_key_once, key_make);
    *owned = false;
    CURL *c = g_key_ok ? pthread_getspecific(g_handle_key) : NULL;
    if (c) {
        curl_easy_reset(c);
        return c;
    }
    c = curl_easy_init();
    if (c && g_key_ok && pthread_setspecific(g_handle_key, c) == 0)
        return c;
    *owned = c != NULL; /* no slot: this relay frees it */
    return c;
}

int kw__api_forward_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? KW_OK : KW_ENOMEM;
}

void kw__api_forward_fini(void)
{
    curl_global_cleanup();
}

/* ---- the address guard ---- */

static bool in_prefix(const uint8_t *a, const uint8_t *net, unsigned prefix)
{
    unsigned full = prefix / 8, rest = prefix % 8;
    if (memcmp(a, net, full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xFF << (8 - rest));
    return (a[full] & mask) == (net[full] & mask);
}

/* Never, whatever the allow list says. */
static bool forbidden_v4(const uint8_t *a)
{
    return a[0] == 0 ||                                                  /* 0.0.0.0/8 */
           (a[0] == 169 && a[1] == 254) ||                               /* link-local, metadata */
           (a[0] == 100 && a[1] == 100 && a[2] == 100 && a[3] == 200) || /* Alibaba metadata */
           a[0] >= 224;                                                  /* multicast, reserved */
}

static bool forbidden_v6(const uint8_t *a)
{
    static const uint8_t unspec[16] = {0};
    static const uint8_t ec2[16] = {0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x54};
    static const uint8_t ec2b[16] = {0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0,    0,
                                     0,    0,    0,    0,    0, 0, 0x02, 0x54};
    if (memcmp(a, unspec, 16) == 0 || memcmp(a, ec2, 16) == 0 || memcmp(a, ec2b, 16) == 0)
        return true;
    if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) /* fe80::/10 */
        return true;
    return a[0] == 0xff; /* multicast */
}

bool kw__fwd_addr_allowed(const kw__fwd_settings_t *s, const char *url_host, const void *sa,
                          size_t sa_len)
{
    uint8_t a4[4], a6[16];
    int fam;
    const struct sockaddr *g = sa;
    if (g->sa_family == AF_INET && sa_len >= sizeof(struct sockaddr_in)) {
        memcpy(a4, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        fam = AF_INET;
    } else if (g->sa_family == AF_INET6 && sa_len >= sizeof(struct sockaddr_in6)) {
        memcpy(a6, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(a6, mapped, 12) == 0) {
            memcpy(a4, a6 + 12, 4);
            fam = AF_INET;
        } else {
            fam = AF_INET6;
        }
    } else {
        return false;
    }
    if (fam == AF_INET ? forbidden_v4(a4) : forbidden_v6(a6))
        return false;
    for (size_t i = 0; i < s->n_allow; i++) {
        const kw__fwd_allow_t *e = &s->allow[i];
        if (!e->is_cidr) {
            if (url_host && strcasecmp(url_host, e->host) == 0)
                return true;
            continue;
        }
        if (e->family == fam && in_prefix(fam == AF_INET ? a4 : a6, e->addr, e->prefix))
            return true;
    }
    return false;
}

/* ---- one relay ---- */

typedef struct relay {
    kw_http_req_t *req;
    const kw__fwd_settings_t *set;
    char host[256]; /* the URL's host (for host entries of the allow list) */
    bool disallowed;
    bool too_large;
    int status;
    kw_buf_t body;
    kw_buf_t hdrs; /* "Name: value\r\n" lines passed back */
    const char *content_type;
} relay_t;

static curl_socket_t on_open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *addr)
{
    relay_t *r = ud;
    if (purpose != CURLSOCKTYPE_IPCXN ||
        !kw__fwd_addr_allowed(r->set, r->host, &addr->addr, addr->addrlen)) {
        r->disallowed = true;
        return CURL_SOCKET_BAD;
    }
    return socket(addr->family, addr->socktype, addr->protocol);
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    relay_t *r = ud;
    size_t len = size * n;
    if (r->body.len + len > r->set->max_response) {
        r->too_large = true;
        return 0; /* aborts the transfer */
    }
    kw_buf_append(&r->body, p, len);
    return r->body.failed ? 0 : len;
}

/* Hop-by-hop and framing headers, in either direction (RFC 9110 7.6.1), plus keyward's
 * own credentials on the way in. */
static bool dropped(const char *name, size_t len, bool request)
{
    static const char *const both[] = {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "host",
        "expect",
    };
    static const char *const in[] = {"authorization", "x-agent-api-key", "x-selected-account-id",
                                     "cookie"};
    static const char *const out[] = {"date", "content-type", "x-request-id", "server"};
    for (size_t i = 0; i < KW_ARRAY_LEN(both); i++)
        if (strlen(both[i]) == len && strncasecmp(name, both[i], len) == 0)
            return true;
    const char *const *l = request ? in : out;
    size_t nl = request ? KW_ARRAY_LEN(in) : KW_ARRAY_LEN(out);
    for (size_t i = 0; i < nl; i++)
        if (strlen(l[i]) == len && strncasecmp(name, l[i], len) == 0)
            return true;
    return false;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    relay_t *r = ud;
    size_t len = size * n;
    if (len >= 5 && strncmp(p, "HTTP/", 5) == 0) {
        /* a new response (after a 1xx): start over */
        r->hdrs.len = 0;
        r->content_type = NULL;
        return len;
    }
    while (len && (p[len - 1] == '\r' || p[len - 1] == '\n'))
        len--;
    const char *colon = memchr(p, ':', len);
    if (!colon || colon == p)
        return size * n;
    size_t nl = (size_t)(colon - p);
    const char *v = colon + 1;
    size_t vl = len - nl - 1;
    while (vl && (*v == ' ' || *v == '\t')) {
        v++;
        vl--;
    }
    for (size_t i = 0; i < vl; i++)
        if ((unsigned char)v[i] < 0x20 && v[i] != '\t')
            return size * n; /* not passed back */
    for (size_t i = 0; i < nl; i++)
        if ((unsigned char)p[i] <= 0x20 || (unsigned char)p[i] >= 0x7f)
            return size * n;
    if (nl == 12 && strncasecmp(p, "content-type", 12) == 0) {
        r->content_type = kw_arena_strndup(r->req->arena, v, vl);
        return size * n;
    }
    if (dropped(p, nl, false) || r->hdrs.len > 64 * 1024)
        return size * n;
    kw_buf_append(&r->hdrs, p, nl);
    kw_buf_puts(&r->hdrs, ": ");
    kw_buf_append(&r->hdrs, v, vl);
    kw_buf_puts(&r->hdrs, "\r\n");
    return size * n;
}

/* The URL's host (lower-cased, without port, brackets or userinfo) into out. */
static void url_host(const char *url, char *out, size_t cap)
{
    out[0] = '\0';
    const char *p = strstr(url, "://");
    if (!p)
        return;
    p += 3;
    size_t n = 0;
    if (*p == '[') {
        p++;
        while (p[n] && p[n] != ']')
            n++;
    } else {
        while (p[n] && p[n] != ':' && p[n] != '/' && p[n] != '?')
            n++;
    }
    if (n >= cap)
        n = cap - 1;
    for (size_t i = 0; i < n; i++)
        out[i] = (char)((p[i] >= 'A' && p[i] <= 'Z') ? p[i] + 32 : p[i]);
    out[n] = '\0';
}

static void fail(kw_http_req_t *req, kw_http_resp_t *resp, int status, const char *msg, int outcome,
                 const char *via, const char *agent_id)
{
    kw_http_resp_error(resp, status, msg);
    kw__fwd_count(outcome);
    kw_log(KW_LOG_INFO, KW_MODULE, "request %s: forward via=%s agent=%s status=%d (%s)",
           req->request_id, via, agent_id, status, msg);
}

void kw__fwd_relay(kw_http_req_t *req, kw_http_resp_t *resp, const kw_agent_t *ag, const char *via)
{
    relay_t r;
    memset(&r, 0, sizeof(r));
    r.req = req;
    r.set = kw__fwd_settings();
    kw_buf_init(&r.body);
    kw_buf_init(&r.hdrs);
    struct curl_slist *hl = NULL;
    CURL *c = NULL;
    bool owned = false;

    /* URL: acp_url without its trailing '/', '/', the raw tail, '?' the raw query */
    kw_str_t base = kw_str_c(ag->acp_url);
    while (base.len && base.ptr[base.len - 1] == '/')
        base.len--;
    kw_str_t tail = req->n_params >= 2 ? req->params[1] : KW_STR("");
    kw_str_t q = kw_http_query_raw(req);
    char *url = kw_arena_sprintf(req->arena, "%.*s/%.*s%s%.*s", KW_STR_FMT(base), KW_STR_FMT(tail),
                                 q.len ? "?" : "", KW_STR_FMT(q));
    if (!url)
        goto oom;
    url_host(url, r.host, sizeof(r.host));

    size_t nh = kw_http_header_count(req);
    for (size_t i = 0; i < nh; i++) {
        const char *name, *value;
        kw_http_header_at(req, i, &name, &value);
        if (dropped(name, strlen(name), true))
            continue;
        char *line = kw_arena_sprintf(req->arena, "%s: %s", name, value);
        if (!line)
            goto oom;
        struct curl_slist *nl = curl_slist_append(hl, line);
        if (!nl)
            goto oom;
        hl = nl;
    }
    /* curl adds these unless told not to: Expect (100-continue waits), Accept */
    static const char *const off[] = {"Expect:", "Accept:", "Content-Type:"};
    for (size_t i = 0; i < KW_ARRAY_LEN(off); i++) {
        if (i == 2 && kw_http_header(req, "content-type"))
            continue;
        struct curl_slist *nl = curl_slist_append(hl, off[i]);
        if (!nl)
            goto oom;
        hl = nl;
    }

    c = thread_handle(&owned);
    if (!c)
        goto oom;
    char *method = kw_arena_strndup(req->arena, req->method.ptr, req->method.len);
    if (!method)
        goto oom;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, r.set->connect_timeout_ms);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, r.set->timeout_ms);
    curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, &r);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, NULL);
    if (kw_str_eq_c(req->method, "GET")) {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    } else if (kw_str_eq_c(req->method, "HEAD")) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, req->body.ptr);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body.len);
        if (!kw_str_eq_c(req->method, "POST"))
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    }

    CURLcode cr = curl_easy_perform(c);
    if (r.disallowed && cr != CURLE_OK) {
        fail(req, resp, 502, "Forward destination is not allowed.", KW__FWD_DISALLOWED, via,
             ag->id);
        goto out;
    }
    if (r.too_large) {
        fail(req, resp, 502, "Upstream response too large.", KW__FWD_TOO_LARGE, via, ag->id);
        goto out;
    }
    if (cr == CURLE_OPERATION_TIMEDOUT) {
        fail(req, resp, 504, "Upstream timed out.", KW__FWD_UPSTREAM_TIMEOUT, via, ag->id);
        goto out;
    }
    if (cr != CURLE_OK) {
        fail(req, resp, 502, "Upstream unreachable.", KW__FWD_UPSTREAM_ERROR, via, ag->id);
        goto out;
    }
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    if (code < 200 || code > 599 || r.body.failed || r.hdrs.failed) {
        fail(req, resp, 502, "Upstream unreachable.", KW__FWD_UPSTREAM_ERROR, via, ag->id);
        goto out;
    }
    char *hb = r.hdrs.len ? kw_arena_strndup(req->arena, r.hdrs.ptr, r.hdrs.len) : NULL;
    if (r.hdrs.len && !hb)
        goto oom;
    resp->status = (int)code;
    resp->content_type = r.content_type ? r.content_type : "application/octet-stream";
    resp->hdr_block = (kw_str_t){hb, hb ? r.hdrs.len : 0};
    kw_buf_free(&resp->body);
    resp->body = r.body;
    kw_buf_init(&r.body);
    kw__fwd_count(KW__FWD_RELAYED);
    kw_log(KW_LOG_INFO, KW_MODULE, "request %s: forward via=%s agent=%s outcome=relayed status=%ld",
           req->request_id, via, ag->id, code);
    goto out;
oom:
    kw__fwd_count(KW__FWD_ERROR);
    kw__api_fail(req, resp, KW_ENOMEM, "forward relay");
out:
    if (c && owned)
        curl_easy_cleanup(c);
    else if (c)
        curl_easy_reset(c); /* drops the pointers into this request (&r, hl, the body) */
    curl_slist_free_all(hl);
    kw_buf_free(&r.body);
    kw_buf_free(&r.hdrs);
}
