/*
 * bench/names_bench.c - the cost of SpiceDB's name validation of a /v1 request
 * (src/api/v1svc_names.c), which every RPC now runs first: a CheckPermission request of
 * the default schema's shape (UUID ids), and a WriteRelationships of 1,000 relationships
 * (the most a write may carry), each validated N times.
 *
 * Usage: names_bench [--n N]   (default 1,000,000 checks; the write N/1000 times)
 * Prints ns per request (CPU time of the thread) and one JSON line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/v1svc_int.h"

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    size_t n = 1000000;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--n") && i + 1 < argc)
            n = (size_t)atol(argv[++i]);
        else {
            fprintf(stderr, "usage: names_bench [--n N]\n");
            return 2;
        }
    }
    if (n < 1000)
        n = 1000;
    kw_v1_check_req_t c;
    memset(&c, 0, sizeof(c));
    c.resource =
        (kw_object_t){KW_STR("agent_api_key"), KW_STR("3f6c2a1e-9b7d-4c1a-8e2f-5d4b3a291c0e")};
    c.permission = KW_STR("read");
    c.subject =
        (kw_subject_t){KW_STR("user"), KW_STR("7a1b2c3d-4e5f-4a6b-9c8d-0e1f2a3b4c5d"), KW_STR_NULL};
    kw_v1_status_t st;
    kw_v1_status_clear(&st);
    size_t bad = 0;
    double t0 = cpu_s();
    for (size_t i = 0; i < n; i++)
        bad += kw__v1_names_check(&c, &st) != KW_OK;
    double check_ns = (cpu_s() - t0) * 1e9 / (double)n;

    static kw_update_t ups[1000];
    for (size_t i = 0; i < 1000; i++) {
        ups[i].op = KW_OP_TOUCH;
        ups[i].rel.resource = c.resource;
        ups[i].rel.relation = KW_STR("parent_agent");
        ups[i].rel.subject = (kw_subject_t){KW_STR("agent"), c.subject.id, KW_STR_NULL};
    }
    kw_v1_write_req_t w = {ups, 1000, NULL, 0, false, NULL};
    size_t nw = n / 1000;
    t0 = cpu_s();
    for (size_t i = 0; i < nw; i++)
        bad += kw__v1_names_write(&w, &st) != KW_OK;
    double write_ns = (cpu_s() - t0) * 1e9 / (double)nw;
    if (bad) {
        fprintf(stderr, "names_bench: a valid request was refused: %s\n", st.msg);
        return 1;
    }
    printf("CheckPermission request: %.1f ns; WriteRelationships of 1000: %.1f us (%.1f ns per "
           "relationship)\n",
           check_ns, write_ns / 1000, write_ns / 1000);
    printf("{\"bench\":\"names\",\"n\":%zu,\"check_ns\":%.1f,\"write1000_ns\":%.0f}\n", n, check_ns,
           write_ns);
    return 0;
}
