/*
 * base/base.h - byte slices, diagnostics, checked allocation, hashing, arenas.
 *
 * Ownership: kw_str_t is a borrowed view (never owns its bytes). kw_arena_t owns
 *   every block it hands out until kw_arena_free/kw_arena_reset. kw_malloc and
 *   friends return NULL on failure (or on size overflow); callers propagate
 *   KW_ENOMEM. Nothing here keeps global mutable state except the fault-injection
 *   counter, a process singleton used only by tests (kw_fault_*).
 * Threads: everything is reentrant; an arena belongs to one thread at a time.
 */
#ifndef KW_BASE_BASE_H
#define KW_BASE_BASE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "limits.h"

#define KW_NODISCARD __attribute__((warn_unused_result))
#define KW_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define KW_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Always-on assertion: prints file:line and aborts. For invariants, not input. */
#define kw_assert(cond)                                                                            \
    do {                                                                                           \
        if (!(cond))                                                                               \
            kw__assert_fail(#cond, __FILE__, __LINE__);                                            \
    } while (0)
_Noreturn void kw__assert_fail(const char *expr, const char *file, int line);

/* ---- byte slices ---- */
typedef struct kw_str {
    const char *ptr;
    size_t len;
} kw_str_t;

#define KW_STR(lit) ((kw_str_t){(lit), sizeof(lit) - 1})
#define KW_STR_NULL ((kw_str_t){NULL, 0})
kw_str_t kw_str_c(const char *cstr); /* NULL -> empty slice */
bool kw_str_eq(kw_str_t a, kw_str_t b);
bool kw_str_eq_c(kw_str_t a, const char *cstr);
/* Format for printf: printf("%.*s", KW_STR_FMT(s)). */
#define KW_STR_FMT(s) (int)(s).len, (s).ptr

/* ---- UTF-8 (RFC 3629): the one validator ---- */
/* Length (1..4) of the well-formed UTF-8 sequence at s[0..avail) with its code point in
 * *cp (may be NULL), or 0 when the bytes there are not one: a stray continuation byte,
 * a truncated sequence, an overlong form, a UTF-16 surrogate or a code point past
 * U+10FFFF. avail 0 gives 0. U+0000 (a NUL byte) is well-formed: length 1. */
size_t kw_utf8_decode(const char *s, size_t avail, uint32_t *cp);
/* Is every byte of s part of a well-formed UTF-8 sequence? (NUL bytes count as valid;
 * callers that cannot hold them check with memchr.) */
bool kw_utf8_valid(kw_str_t s);

/* ---- diagnostics for text input (schemas, relationship strings, JSON) ---- */
typedef struct kw_diag {
    int code;      /* KW_E* */
    uint32_t line; /* 1-based; 0 when not about a position */
    uint32_t col;  /* 1-based, in bytes */
    char msg[256]; /* client-safe: never secrets, SQL or paths */
} kw_diag_t;

/* Sets code/line/col and formats msg; returns code so callers can `return kw_diag_set(...)`.
 * diag may be NULL. */
int kw_diag_set(kw_diag_t *diag, int code, uint32_t line, uint32_t col, const char *fmt, ...)
    KW_PRINTF(5, 6);
void kw_diag_clear(kw_diag_t *diag);

/* ---- checked allocation ---- */
void *kw_malloc(size_t n);
void *kw_calloc(size_t n, size_t size); /* overflow-checked */
void *kw_realloc(void *p, size_t n);
void *kw_reallocarray(void *p, size_t n, size_t size); /* overflow-checked */
char *kw_strndup(const char *s, size_t n);             /* NUL-terminated copy */
void kw_free(void *p);

/* Test-only fault injection: after kw_fault_arm(n), the n-th following kw_malloc-family
 * call fails (returns NULL). kw_fault_arm(0) disarms. Process singleton; tests only. */
void kw_fault_arm(long n);
bool kw_fault_fired(void);

/* Growable array helper: ensures *cap >= need, reallocating *p (element size esz).
 * Returns KW_OK or KW_ENOMEM (p untouched on failure). */
KW_NODISCARD int kw_grow(void **p, size_t *cap, size_t need, size_t esz);

/* ---- hashing ---- */
uint64_t kw_hash(const void *data, size_t len, uint64_t seed);
static inline uint64_t kw_hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

/* ---- arena (request / scratch lifetime) ---- */
typedef struct kw_arena kw_arena_t;
kw_arena_t *kw_arena_new(size_t block_size);   /* NULL on OOM; block_size 0 = default */
void *kw_arena_alloc(kw_arena_t *a, size_t n); /* 16-byte aligned; NULL on OOM */
/* A NUL-terminated copy of s[0..n) (s may be NULL when n is 0); NULL on OOM. */
char *kw_arena_strndup(kw_arena_t *a, const char *s, size_t n);
/* Copies the slice s (s.ptr may be NULL when s.len is 0) into the arena, NUL-terminated:
 * *out = {copy, s.len}. KW_OK, or KW_ENOMEM with *out untouched. */
KW_NODISCARD int kw_arena_str_copy(kw_arena_t *a, kw_str_t s, kw_str_t *out);
char *kw_arena_sprintf(kw_arena_t *a, const char *fmt, ...) KW_PRINTF(2, 3);
void kw_arena_reset(kw_arena_t *a); /* keeps the first block */
void kw_arena_free(kw_arena_t *a);

/* ---- growable string buffer (heap) ---- */
typedef struct kw_buf {
    char *ptr; /* NUL-terminated when len > 0 or after any append */
    size_t len;
    size_t cap;
    bool failed; /* sticky: set on the first allocation failure */
} kw_buf_t;
void kw_buf_init(kw_buf_t *b);
void kw_buf_append(kw_buf_t *b, const void *data, size_t len);
void kw_buf_puts(kw_buf_t *b, const char *s);
void kw_buf_printf(kw_buf_t *b, const char *fmt, ...) KW_PRINTF(2, 3);
void kw_buf_free(kw_buf_t *b);

/* ---- files ---- */
/* Reads the whole file at `path` into a new buffer (*out, kw_malloc'd, NUL-terminated
 * after *len bytes; caller kw_free's). `max` > 0 refuses a file longer than max bytes with
 * KW_ETOOLARGE (0: no limit). KW_EIO when it cannot be opened or read (errno says why),
 * KW_ENOMEM; *out and *len are written only on KW_OK. */
KW_NODISCARD int kw_read_file(const char *path, size_t max, char **out, size_t *len);

#endif
