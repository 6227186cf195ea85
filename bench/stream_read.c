/*
 * bench/stream_read.c - reads one streamed /v1 answer (by default a LookupResources) over a
 * raw socket as fast as the server writes it, and checks it (issue 12 item 4).
 *
 * Sends one HTTP/1.1 POST, de-chunks the answer and splits it into lines. Every line gets a
 * structural check: it is {"result":{...}} with a resourceObjectId and an afterResultCursor
 * token, the ids come in strictly increasing byte order (the stream's order), and no line
 * is an {"error": ...} line. Every --parse-every'th line (default 1,000; the first always) is
 * parsed whole with jansson and its fields checked: the structural check
 * alone cannot be trusted to catch a broken line, and parsing every line would measure the
 * reader. A Python reader (bench/lookup_stream.py before) was most of what it measured.
 *
 * Usage: stream_read HOST:PORT --token T [--path P] [--body JSON] [--expect N] [--runs R]
 *                    [--pid SERVER_PID] [--parse-every K]
 * Default body: {"resourceObjectType":"doc","permission":"view",
 *                "subject":{"object":{"objectType":"user","objectId":"reader"}}}
 * Output: one line per run, then one JSON line with the medians:
 *   {"bench":"stream_read","runs":R,"lines":N,"median_results_per_s":...,
 *    "median_first_line_ms":...,"median_first100_ms":...,"max_rss_growth_kb":...,
 *    "median_server_cpu_ns_per_result":...,"ok":...}
 * --pid: the server's VmRSS is sampled every 100,000 lines (the growth during the stream),
 * and its CPU time (user + system, /proc/PID/stat) is read before and after each run: CPU
 * ns per result, a figure less at the mercy of a loaded machine than results/s (counted in
 * clock ticks, 10 ms: meaningful for runs of a second or so, like a 1M stream).
 * Exit status 0 only when every run was complete and valid (and had --expect lines).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_BODY                                                                               \
    "{\"resourceObjectType\":\"doc\",\"permission\":\"view\",\"subject\":{\"object\":{"            \
    "\"objectType\":\"user\",\"objectId\":\"reader\"}}}"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long rss_kb(int pid)
{
    if (pid <= 0)
        return -1;
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

/* The server's CPU time (user + system) so far, in seconds; -1 without --pid. */
static double cpu_s(int pid)
{
    if (pid <= 0)
        return -1;
    char path[64], text[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    /* fields 14 and 15 (utime, stime) come after the ")" that ends the command's name */
    char *p = strrchr(text, ')');
    unsigned long long ut = 0, st = 0;
    if (!p ||
        sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

typedef struct {
    /* results */
    uint64_t lines;
    double first_line, first100, total;
    long rss0, rss_peak;
    bool ok;
    char why[256];
    /* checking state */
    char last_id[1024];
    size_t last_len;
    bool have_last;
    unsigned parse_every;
    int pid;
    double t0;
} run_t;

static bool fail(run_t *r, const char *why, const char *line, size_t len)
{
    if (r->ok) {
        r->ok = false;
        snprintf(r->why, sizeof(r->why), "line %llu: %s: %.*s", (unsigned long long)r->lines + 1,
                 why, (int)(len > 160 ? 160 : len), line);
    }
    return false;
}

/* memmem for a literal. */
static const char *find(const char *p, size_t n, const char *lit)
{
    return memmem(p, n, lit, strlen(lit));
}

static bool full_check(run_t *r, const char *p, size_t n)
{
    json_error_t e;
    json_t *j = json_loadb(p, n, 0, &e);
    if (!j)
        return fail(r, "not JSON", p, n);
    json_t *res = json_object_get(j, "result");
    json_t *id = json_object_get(res, "resourceObjectId");
    json_t *cur = json_object_get(json_object_get(res, "afterResultCursor"), "token");
    json_t *at = json_object_get(json_object_get(res, "lookedUpAt"), "token");
    bool ok = json_is_object(res) && json_object_size(j) == 1 && json_is_string(id) &&
              json_is_string(cur) && json_string_length(cur) > 0 && json_is_string(at) &&
              json_is_string(json_object_get(res, "permissionship"));
    /* the structural check's id is the one JSON has */
    ok = ok && json_string_length(id) == r->last_len &&
         memcmp(json_string_value(id), r->last_id, r->last_len) == 0;
    json_decref(j);
    return ok || fail(r, "a result without its fields", p, n);
}

/* One line (without its \n). */
static bool line(run_t *r, const char *p, size_t n)
{
    static const char head[] = "{\"result\":{";
    static const char idk[] = "\"resourceObjectId\":\"";
    static const char curk[] = "\"afterResultCursor\":{\"token\":\"";
    if (n < sizeof(head) - 1 + 3 || memcmp(p, head, sizeof(head) - 1) != 0 ||
        memcmp(p + n - 3, "}}}", 3) != 0)
        return fail(r, n >= 8 && memcmp(p, "{\"error\"", 8) == 0 ? "an error line" : "not a result",
                    p, n);
    const char *i = find(p, n, idk);
    const char *c = i ? find(i, n - (size_t)(i - p), curk) : NULL;
    if (!i || !c)
        return fail(r, "no resourceObjectId or afterResultCursor", p, n);
    i += sizeof(idk) - 1;
    const char *ie = memchr(i, '"', (size_t)(p + n - i));
    c += sizeof(curk) - 1;
    const char *ce = memchr(c, '"', (size_t)(p + n - c));
    if (!ie || !ce || ce == c || (size_t)(ie - i) >= sizeof(r->last_id))
        return fail(r, "a bad id or cursor", p, n);
    size_t il = (size_t)(ie - i);
    if (r->have_last) {
        size_t m = il < r->last_len ? il : r->last_len;
        int d = memcmp(i, r->last_id, m);
        if (d < 0 || (d == 0 && il <= r->last_len))
            return fail(r, "ids out of order", p, n);
    }
    memcpy(r->last_id, i, il);
    r->last_len = il;
    r->have_last = true;
    r->lines++;
    if (r->lines == 1) {
        r->first_line = now_s() - r->t0;
        if (!full_check(r, p, n))
            return false;
    }
    if (r->lines == 100)
        r->first100 = now_s() - r->t0;
    if (r->parse_every && r->lines % r->parse_every == 0 && !full_check(r, p, n))
        return false;
    if (r->lines % 100000 == 0) {
        long kb = rss_kb(r->pid);
        if (kb > r->rss_peak)
            r->rss_peak = kb;
    }
    return true;
}

static int connect_to(const char *hostport)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    if (!colon || (size_t)(colon - hostport) >= sizeof(host))
        return -1;
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = '\0';
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, colon + 1, &hints, &ai) != 0 || !ai)
        return -1;
    int fd = socket(ai->ai_family, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    return fd;
}

/* One stream: false with r->why on any failure. */
static bool run_once(run_t *r, const char *hostport, const char *path, const char *token,
                     const char *body)
{
    int fd = connect_to(hostport);
    if (fd < 0) {
        snprintf(r->why, sizeof(r->why), "cannot connect to %s", hostport);
        return false;
    }
    size_t qcap = strlen(path) + strlen(token) + strlen(body) + 256;
    char *q = malloc(qcap);
    size_t cap = 1u << 20;
    char *in = malloc(cap);   /* bytes as received */
    char *pend = malloc(cap); /* de-chunked bytes of a line not complete yet */
    if (!q || !in || !pend) {
        snprintf(r->why, sizeof(r->why), "out of memory");
        free(q), free(in), free(pend), close(fd);
        return false;
    }
    int qn = snprintf(q, qcap,
                      "POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                      path, token, strlen(body), body);
    r->ok = true;
    r->rss0 = r->rss_peak = rss_kb(r->pid);
    r->t0 = now_s();
    bool done = false, head = false;
    if (send(fd, q, (size_t)qn, MSG_NOSIGNAL) != qn) {
        snprintf(r->why, sizeof(r->why), "send failed");
        r->ok = false;
        goto out;
    }
    size_t have = 0, pn = 0; /* in[0..have): unparsed; pend[0..pn): a partial line */
    uint64_t chunk_left = 0; /* data bytes left in the current chunk */
    int crlf_left = 0;       /* the \r\n after a chunk's data */
    while (!done && r->ok) {
        ssize_t got = recv(fd, in + have, cap - have, 0);
        if (got <= 0) {
            if (got < 0 && errno == EINTR)
                continue;
            fail(r, "the connection ended before the last chunk", "", 0);
            break;
        }
        have += (size_t)got;
        size_t o = 0;
        if (!head) {
            char *e = memmem(in, have, "\r\n\r\n", 4);
            if (!e)
                continue;
            if (have < 12 || memcmp(in + 9, "200", 3) != 0)
                fail(r, "not a 200", in, have);
            else if (!memmem(in, (size_t)(e - in), "chunked", 7))
                fail(r, "not chunked", in, (size_t)(e - in));
            head = true;
            o = (size_t)(e - in) + 4;
        }
        while (o < have && r->ok && !done) {
            if (crlf_left) {
                size_t k = have - o < (size_t)crlf_left ? have - o : (size_t)crlf_left;
                o += k;
                crlf_left -= (int)k;
                continue;
            }
            if (chunk_left == 0) { /* a size line */
                char *e = memchr(in + o, '\n', have - o);
                if (!e)
                    break;
                char *end = NULL;
                unsigned long long sz = strtoull(in + o, &end, 16);
                if (end == in + o) {
                    fail(r, "a bad chunk size", in + o, have - o);
                    break;
                }
                o = (size_t)(e - in) + 1;
                if (sz == 0) {
                    done = true;
                    break;
                }
                chunk_left = sz;
                continue;
            }
            size_t k = have - o < chunk_left ? have - o : (size_t)chunk_left;
            /* split data[o, o+k) into lines, joining the partial one kept in pend */
            const char *d = in + o, *dend = in + o + k;
            while (d < dend && r->ok) {
                const char *nl = memchr(d, '\n', (size_t)(dend - d));
                if (!nl) {
                    if (pn + (size_t)(dend - d) > cap) {
                        fail(r, "a line over 1 MiB", pend, pn);
                        break;
                    }
                    memcpy(pend + pn, d, (size_t)(dend - d));
                    pn += (size_t)(dend - d);
                    break;
                }
                if (pn) {
                    if (pn + (size_t)(nl - d) > cap) {
                        fail(r, "a line over 1 MiB", pend, pn);
                        break;
                    }
                    memcpy(pend + pn, d, (size_t)(nl - d));
                    line(r, pend, pn + (size_t)(nl - d));
                    pn = 0;
                } else {
                    line(r, d, (size_t)(nl - d));
                }
                d = nl + 1;
            }
            o += k;
            chunk_left -= k;
            if (chunk_left == 0)
                crlf_left = 2;
        }
        memmove(in, in + o, have - o);
        have -= o;
        if (have == cap) {
            fail(r, "a chunk size line over 1 MiB", in, have);
            break;
        }
    }
    r->total = now_s() - r->t0;
    if (r->ok && pn)
        fail(r, "the last line has no newline", pend, pn);
out:
    free(q);
    free(in);
    free(pend);
    close(fd);
    return r->ok;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_d);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
    const char *hostport = NULL, *token = "", *path = "/v1/permissions/resources",
               *body = DEFAULT_BODY;
    long long expect = -1;
    int runs = 3, pid = 0;
    unsigned parse_every = 1000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (a[0] != '-' && !hostport) {
            hostport = a;
            continue;
        }
        if (!v) {
            fprintf(stderr, "stream_read: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (strcmp(a, "--token") == 0)
            token = v;
        else if (strcmp(a, "--path") == 0)
            path = v;
        else if (strcmp(a, "--body") == 0)
            body = v;
        else if (strcmp(a, "--expect") == 0)
            expect = atoll(v);
        else if (strcmp(a, "--runs") == 0)
            runs = atoi(v);
        else if (strcmp(a, "--pid") == 0)
            pid = atoi(v);
        else if (strcmp(a, "--parse-every") == 0)
            parse_every = (unsigned)atoi(v);
        else {
            fprintf(stderr, "stream_read: unknown option %s\n", a);
            return 2;
        }
    }
    if (!hostport || runs < 1 || runs > 1000) {
        fprintf(stderr, "usage: stream_read HOST:PORT --token T [--path P] [--body JSON] "
                        "[--expect N] [--runs R] [--pid SERVER_PID] [--parse-every K]\n");
        return 2;
    }
    double *rate = calloc((size_t)runs, sizeof(double));
    double *f1 = calloc((size_t)runs, sizeof(double));
    double *f100 = calloc((size_t)runs, sizeof(double));
    double *cpu = calloc((size_t)runs, sizeof(double));
    if (!rate || !f1 || !f100 || !cpu)
        return 1;
    long growth = 0;
    uint64_t lines = 0;
    int status = 0;
    for (int i = 0; i < runs; i++) {
        run_t *r = calloc(1, sizeof(*r));
        if (!r)
            return 1;
        r->parse_every = parse_every;
        r->pid = pid;
        double c0 = cpu_s(pid);
        bool ok = run_once(r, hostport, path, token, body);
        double c1 = cpu_s(pid);
        cpu[i] = c0 >= 0 && c1 >= 0 && r->lines ? (c1 - c0) * 1e9 / (double)r->lines : -1;
        if (ok && expect >= 0 && (long long)r->lines != expect) {
            snprintf(r->why, sizeof(r->why), "%llu lines, expected %lld",
                     (unsigned long long)r->lines, expect);
            ok = false;
        }
        rate[i] = r->total > 0 ? (double)r->lines / r->total : 0;
        f1[i] = r->first_line * 1e3;
        f100[i] = r->first100 * 1e3;
        if (r->rss_peak - r->rss0 > growth)
            growth = r->rss_peak - r->rss0;
        lines = r->lines;
        printf("run %d: %llu lines in %.3f s = %.0f results/s, first line %.2f ms, first 100 "
               "lines %.2f ms, server RSS growth %ld KiB, server CPU %.0f ns/result%s%s\n",
               i + 1, (unsigned long long)r->lines, r->total, rate[i], f1[i], f100[i],
               r->rss_peak - r->rss0, cpu[i], ok ? "" : ", FAILED: ", ok ? "" : r->why);
        fflush(stdout);
        if (!ok)
            status = 1;
        free(r);
    }
    printf("{\"bench\":\"stream_read\",\"runs\":%d,\"lines\":%llu,\"median_results_per_s\":%.0f,"
           "\"median_first_line_ms\":%.3f,\"median_first100_ms\":%.3f,\"max_rss_growth_kb\":%ld,"
           "\"median_server_cpu_ns_per_result\":%.0f,\"ok\":%s}\n",
           runs, (unsigned long long)lines, median(rate, runs), median(f1, runs),
           median(f100, runs), growth, median(cpu, runs), status ? "false" : "true");
    free(rate);
    free(f1);
    free(f100);
    free(cpu);
    return status;
}
