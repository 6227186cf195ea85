/*
 * base/log.h - leveled logging to stderr.
 *
 * Lines are written whole (one write(2) per line) so concurrent threads never
 * interleave. Never pass a secret (key, token, hash) to these functions.
 * The minimum level is a process singleton set once at startup (kw_log_set_level).
 */
#ifndef KW_BASE_LOG_H
#define KW_BASE_LOG_H

#include "base.h"

typedef enum {
    KW_LOG_DEBUG = 0,
    KW_LOG_INFO,
    KW_LOG_WARN,
    KW_LOG_ERROR,
    KW_LOG_OFF
} kw_log_level_t;

void kw_log_set_level(kw_log_level_t lvl);
kw_log_level_t kw_log_get_level(void);
/* Plain text line: "<ts> <LEVEL> [module] message". */
void kw_log(kw_log_level_t lvl, const char *module, const char *fmt, ...) KW_PRINTF(3, 4);
/* Writes one pre-formatted line (a newline is appended) to stderr atomically. */
void kw_log_raw(const char *line, size_t len);

#endif
