/*
 * base/base.c - slices, diagnostics, checked allocation, hashing, arenas, buffers.
 */
#include "base.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Noreturn void kw__assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "keyward: assertion failed: %s (%s:%d)\n", expr, file, line);
    abort();
}

kw_str_t kw_str_c(const char *cstr)
{
    kw_str_t s = {cstr ? cstr : "", cstr ? strlen(cstr) : 0};
    return s;
}

bool kw_str_eq(kw_str_t a, kw_str_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

bool kw_str_eq_c(kw_str_t a, const char *cstr)
{
    return kw_str_eq(a, kw_str_c(cstr));
}

int kw_diag_set(kw_diag_t *diag, int code, uint32_t line, uint32_t col, const char *fmt, ...)
{
    if (diag) {
        va_list ap;
        diag->code = code;
        diag->line = line;
        diag->col = col;
        va_start(ap, fmt);
        vsnprintf(diag->msg, sizeof(diag->msg), fmt, ap);
        va_end(ap);
    }
    return code;
}

void kw_diag_clear(kw_diag_t *diag)
{
    if (diag)
        memset(diag, 0, sizeof(*diag));
}

/* ---- allocation with test-only fault injection ---- */

/* Process singleton for tests: number of allocations left before one fails (0 = off). */
static _Atomic long g_fault_countdown;
static _Atomic bool g_fault_fired;

void kw_fault_arm(long n)
{
    if (n > 0)
        atomic_store(&g_fault_fired, false);
    atomic_store(&g_fault_countdown, n);
}

bool kw_fault_fired(void)
{
    return atomic_load(&g_fault_fired);
}

static bool fault_hit(void)
{
    long cur = atomic_load_explicit(&g_fault_countdown, memory_order_relaxed);
    if (cur <= 0)
        return false;
    if (atomic_fetch_sub(&g_fault_countdown, 1) == 1) {
        atomic_store(&g_fault_fired, true);
        return true;
    }
    return false;
}

void *kw_malloc(size_t n)
{
    if (fault_hit())
        return NULL;
    return malloc(n ? n : 1);
}

void *kw_calloc(size_t n, size_t size)
{
    if (fault_hit())
        return NULL;
    if (n == 0 || size == 0)
        return calloc(1, 1);
    return calloc(n, size);
}

void *kw_realloc(void *p, size_t n)
{
    if (fault_hit())
        return NULL;
    return realloc(p, n ? n : 1);
}

void *kw_reallocarray(void *p, size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    return kw_realloc(p, n * size);
}

char *kw_strndup(const char *s, size_t n)
{
    char *d = kw_malloc(n + 1);
    if (!d)
        return NULL;
    if (n)
        memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

void kw_free(void *p)
{
    free(p);
}

int kw_grow(void **p, size_t *cap, size_t need, size_t esz)
{
    if (need <= *cap)
        return KW_OK;
    size_t ncap = *cap ? *cap : 4;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2)
            return KW_ENOMEM;
        ncap *= 2;
    }
    void *np = kw_reallocarray(*p, ncap, esz);
    if (!np)
        return KW_ENOMEM;
    *p = np;
    *cap = ncap;
    return KW_OK;
}

/* ---- hashing: a small 64-bit multiply-xorshift hash over 8-byte words ---- */

static inline uint64_t rd64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

uint64_t kw_hash(const void *data, size_t len, uint64_t seed)
{
    const unsigned char *p = data;
    uint64_t h = seed ^ (0x9E3779B97F4A7C15ULL * (len + 1));
    while (len >= 8) {
        h ^= kw_hash_u64(rd64(p));
        h = (h << 27 | h >> 37) * 0x9E3779B97F4A7C15ULL + 0x52dce729;
        p += 8;
        len -= 8;
    }
    uint64_t tail = 0;
    for (size_t i = 0; i < len; i++)
        tail |= (uint64_t)p[i] << (8 * i);
    h ^= kw_hash_u64(tail + len);
    return kw_hash_u64(h);
}

/* ---- arena ---- */

typedef struct arena_block {
    struct arena_block *next;
    size_t size;
    size_t used;
    _Alignas(16) unsigned char data[];
} arena_block_t;

struct kw_arena {
    arena_block_t *head;
    size_t block_size;
};

static arena_block_t *block_new(size_t size)
{
    arena_block_t *b = kw_malloc(sizeof(*b) + size);
    if (!b)
        return NULL;
    b->next = NULL;
    b->size = size;
    b->used = 0;
    return b;
}

kw_arena_t *kw_arena_new(size_t block_size)
{
    kw_arena_t *a = kw_malloc(sizeof(*a));
    if (!a)
        return NULL;
    a->block_size = block_size ? block_size : 8192;
    a->head = block_new(a->block_size);
    if (!a->head) {
        kw_free(a);
        return NULL;
    }
    return a;
}

void *kw_arena_alloc(kw_arena_t *a, size_t n)
{
    if (n > SIZE_MAX - 16)
        return NULL;
    n = (n + 15) & ~(size_t)15;
    if (!n)
        n = 16;
    arena_block_t *b = a->head;
    if (b->size - b->used < n) {
        size_t sz = n > a->block_size ? n : a->block_size;
        arena_block_t *nb = block_new(sz);
        if (!nb)
            return NULL;
        if (n > a->block_size && b->used < b->size) {
            /* An oversized block goes behind the head so the head keeps serving. */
            nb->next = b->next;
            b->next = nb;
            nb->used = n;
            return nb->data;
        }
        nb->next = b;
        a->head = nb;
        b = nb;
    }
    void *p = b->data + b->used;
    b->used += n;
    return p;
}

char *kw_arena_strndup(kw_arena_t *a, const char *s, size_t n)
{
    char *d = kw_arena_alloc(a, n + 1);
    if (!d)
        return NULL;
    if (n)
        memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

int kw_arena_str_copy(kw_arena_t *a, kw_str_t s, kw_str_t *out)
{
    char *d = kw_arena_strndup(a, s.ptr, s.len);
    if (!d)
        return KW_ENOMEM;
    *out = (kw_str_t){d, s.len};
    return KW_OK;
}

char *kw_arena_sprintf(kw_arena_t *a, const char *fmt, ...)
{
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        va_end(ap2);
        return NULL;
    }
    char *d = kw_arena_alloc(a, (size_t)n + 1);
    if (d)
        vsnprintf(d, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return d;
}

void kw_arena_reset(kw_arena_t *a)
{
    /* Keep the last block of the chain (the first one allocated). */
    arena_block_t *b = a->head;
    while (b->next) {
        arena_block_t *n = b->next;
        kw_free(b);
        b = n;
    }
    b->used = 0;
    a->head = b;
}

void kw_arena_free(kw_arena_t *a)
{
    if (!a)
        return;
    arena_block_t *b = a->head;
    while (b) {
        arena_block_t *n = b->next;
        kw_free(b);
        b = n;
    }
    kw_free(a);
}

/* ---- buffers ---- */

void kw_buf_init(kw_buf_t *b)
{
    memset(b, 0, sizeof(*b));
}

void kw_buf_append(kw_buf_t *b, const void *data, size_t len)
{
    if (b->failed)
        return;
    if (len > SIZE_MAX - b->len - 1 ||
        kw_grow((void **)&b->ptr, &b->cap, b->len + len + 1, 1) != KW_OK) {
        b->failed = true;
        return;
    }
    if (len)
        memcpy(b->ptr + b->len, data, len);
    b->len += len;
    b->ptr[b->len] = '\0';
}

void kw_buf_puts(kw_buf_t *b, const char *s)
{
    kw_buf_append(b, s, strlen(s));
}

void kw_buf_printf(kw_buf_t *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || kw_grow((void **)&b->ptr, &b->cap, b->len + (size_t)n + 1, 1) != KW_OK) {
        b->failed = true;
        va_end(ap2);
        return;
    }
    vsnprintf(b->ptr + b->len, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    b->len += (size_t)n;
}

void kw_buf_free(kw_buf_t *b)
{
    kw_free(b->ptr);
    kw_buf_init(b);
}

/* ---- UTF-8 ---- */

size_t kw_utf8_decode(const char *s, size_t avail, uint32_t *cp)
{
    const unsigned char *p = (const unsigned char *)s;
    if (avail == 0)
        return 0;
    unsigned char c = p[0];
    size_t n;
    uint32_t v;
    /* The second byte's range rules out overlongs (E0, F0), surrogates (ED) and code
     * points past U+10FFFF (F4): RFC 3629, section 4. */
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80) {
        if (cp)
            *cp = c;
        return 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
        n = 2, v = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3, v = c & 0x0F;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4, v = c & 0x07;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if (avail < n || p[1] < lo || p[1] > hi)
        return 0;
    v = (v << 6) | (p[1] & 0x3F);
    for (size_t i = 2; i < n; i++) {
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
        v = (v << 6) | (p[i] & 0x3F);
    }
    if (cp)
        *cp = v;
    return n;
}

bool kw_utf8_valid(kw_str_t s)
{
    size_t i = 0;
    while (i < s.len) {
        if ((unsigned char)s.ptr[i] < 0x80) { /* ASCII runs are the common case */
            i++;
            continue;
        }
        size_t n = kw_utf8_decode(s.ptr + i, s.len - i, NULL);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

/* ---- files ---- */

int kw_read_file(const char *path, size_t max, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return KW_EIO;
    kw_buf_t b;
    kw_buf_init(&b);
    char chunk[16384];
    size_t n;
    int rc = KW_OK;
    while (rc == KW_OK && (n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (max && b.len + n > max)
            rc = KW_ETOOLARGE;
        else
            kw_buf_append(&b, chunk, n);
    }
    if (rc == KW_OK && ferror(f))
        rc = KW_EIO;
    int saved = errno; /* fclose must not hide why the read failed */
    fclose(f);
    errno = saved;
    kw_buf_append(&b, "", 0); /* the NUL, also for an empty file */
    if (rc == KW_OK && b.failed)
        rc = KW_ENOMEM;
    if (rc != KW_OK) {
        kw_buf_free(&b);
        return rc;
    }
    *out = b.ptr;
    *len = b.len;
    return KW_OK;
}
