/*
 * base/log.c - leveled logging; one write(2) per line so threads never interleave.
 */
#include "log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Process singleton: the minimum level, set once at startup. */
static _Atomic int g_level = KW_LOG_INFO;

void kw_log_set_level(kw_log_level_t lvl)
{
    atomic_store(&g_level, (int)lvl);
}

kw_log_level_t kw_log_get_level(void)
{
    return (kw_log_level_t)atomic_load(&g_level);
}

void kw_log_raw(const char *line, size_t len)
{
    char buf[4096];
    if (len + 1 <= sizeof(buf)) {
        memcpy(buf, line, len);
        buf[len] = '\n';
        ssize_t w = write(STDERR_FILENO, buf, len + 1);
        (void)w;
    } else {
        ssize_t w = write(STDERR_FILENO, line, len);
        w = write(STDERR_FILENO, "\n", 1);
        (void)w;
    }
}

void kw_log(kw_log_level_t lvl, const char *module, const char *fmt, ...)
{
    static const char *names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    if ((int)lvl < atomic_load(&g_level) || lvl >= KW_LOG_OFF)
        return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s [%s] ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, names[lvl], module ? module : "-");
    if (n < 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len >= sizeof(line))
        len = sizeof(line) - 1;
    kw_log_raw(line, len);
}
