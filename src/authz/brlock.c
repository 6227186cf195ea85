/*
 * authz/brlock.c - the engine's "big reader" lock (contract and rules in brlock_int.h).
 *
 * The protocol (every step a sequentially consistent atomic, so of "a reader counts
 * itself, then loads the writer word" and "a writer raises the word, then loads the
 * counts" at least one side sees the other):
 *   reader: add 1 to its slot (or the shared count); if the writer word is 0 it is in.
 *     Otherwise it takes the 1 back (waking a writer draining that word), counts itself
 *     among the waiting readers, waits for the word to fall to 0 and tries again; once in,
 *     it leaves the waiting count (waking a writer that waits for it to empty).
 *   writer: takes the writers' mutex; waits for the waiting readers to get in (so a
 *     stream of writers cannot starve readers); raises the word; waits for the shared
 *     count and every slot handed out so far to drain. Unlock lowers the word and wakes
 *     the readers asleep on it.
 * Waits spin a little (a writer's batch is usually microseconds), then futex_wait on the
 * very word they wait on with the value they saw, so a change between the load and the
 * sleep makes the sleep return at once: no wakeup is lost. Wakes are issued only when a
 * writer is active (readers) or readers wait (writer unlock).
 *
 * Thread slots are process-wide: thread i uses line 2 + i of every lock. The registry is a
 * bitmap of the indices in use (global mutable state, atomics only) plus a pthread key
 * whose destructor returns a thread's index when it exits. `reg_high` (one past the
 * highest index ever handed out) bounds the writer's scan.
 */
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "authz/brlock_int.h"

#define LINE_SHARED 0u
#define LINE_WAITING 1u
#define LINE_SLOT(i) (2u + (unsigned)(i))
#define N_LINES (2u + KW_BRLOCK_SLOTS)
#define N_WORDS (KW_BRLOCK_SLOTS / 64)
/* Spin budgets, in pause instructions (~25 ns each on the benchmark machine): a writer
 * waits ~1.5 us for readers to leave before it sleeps; a reader ~25 us for a writer's
 * batch (10 updates take ~10 us), because a reader that sleeps gives its core away and,
 * on a busy machine, gets it back only after other processes' time slices. */
#define WRITER_SPINS 64
#define READER_SPINS 1024

_Static_assert(KW_BRLOCK_SLOTS % 64 == 0, "the slot bitmap is made of 64-bit words");
_Static_assert((KW_BRLOCK_STRIDE & (KW_BRLOCK_STRIDE - 1)) == 0, "stride is a power of 2");

/* ---- process-wide thread slots ---- */

static pthread_once_t reg_once = PTHREAD_ONCE_INIT;
static pthread_key_t reg_key;
static bool reg_key_ok; /* written once inside pthread_once */
static _Atomic uint64_t reg_used[N_WORDS];
static _Atomic uint32_t reg_high;
/* This thread's slot: >= 0 an index; -1 none yet (or none was free); -2 never again (the
 * thread is exiting: its index may already belong to another thread). */
static _Thread_local int reg_slot = -1;
/* Its address identifies the thread as a lock's writer. */
static _Thread_local char reg_token;

static void on_thread_exit(void *v)
{
    unsigned i = (unsigned)((uintptr_t)v - 1);
    reg_slot = -2;
    atomic_fetch_and(&reg_used[i / 64], ~(UINT64_C(1) << (i % 64)));
}

static void reg_init(void)
{
    reg_key_ok = pthread_key_create(&reg_key, on_thread_exit) == 0;
}

/* Takes a free index for this thread, or returns -1 (none free, or no key). */
static int reg_take(void)
{
    if (pthread_once(&reg_once, reg_init) != 0 || !reg_key_ok)
        return -1;
    for (unsigned w = 0; w < N_WORDS; w++) {
        uint64_t used = atomic_load(&reg_used[w]);
        while (~used) {
            unsigned b = (unsigned)__builtin_ctzll(~used);
            uint64_t bit = UINT64_C(1) << b;
            if (!atomic_compare_exchange_weak(&reg_used[w], &used, used | bit))
                continue;
            unsigned i = w * 64 + b;
            if (pthread_setspecific(reg_key, (void *)(uintptr_t)(i + 1)) != 0) {
                atomic_fetch_and(&reg_used[w], ~bit);
                return -1;
            }
            /* Published before the slot is ever counted on: see the file comment. */
            uint32_t high = atomic_load(&reg_high);
            while (high < i + 1 && !atomic_compare_exchange_weak(&reg_high, &high, i + 1))
                ;
            reg_slot = (int)i;
            return (int)i;
        }
    }
    return -1;
}

static inline int my_slot(void)
{
    int s = reg_slot;
    if (s >= 0)
        return s;
    return s == -2 ? -1 : reg_take();
}

int kw__brlock_thread_slot(void)
{
    return reg_slot >= 0 ? reg_slot : -1;
}

static inline uintptr_t my_token(void)
{
    return (uintptr_t)&reg_token;
}

/* ---- waiting ---- */

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Returns once *w was seen != v, or after a wakeup (the caller re-checks either way). */
static void word_wait(_Atomic uint32_t *w, uint32_t v, bool spin)
{
    for (int i = 0; spin && i < WRITER_SPINS; i++) {
        if (atomic_load_explicit(w, memory_order_relaxed) != v)
            return;
        cpu_relax();
    }
    /* EAGAIN (the word already changed) and EINTR both mean: look again. */
    syscall(SYS_futex, w, FUTEX_WAIT_PRIVATE, v, NULL, NULL, 0);
}

static void word_wake(_Atomic uint32_t *w, int n)
{
    syscall(SYS_futex, w, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

static inline _Atomic uint32_t *line(const kw_brlock_t *l, unsigned i)
{
    return (_Atomic uint32_t *)(void *)(l->lines + (size_t)i * KW_BRLOCK_STRIDE);
}

/* ---- lifecycle ---- */

int kw__brlock_init(kw_brlock_t *l)
{
    l->block = kw_malloc((size_t)(N_LINES + 1) * KW_BRLOCK_STRIDE);
    if (!l->block)
        goto fail_alloc;
    uintptr_t p = ((uintptr_t)l->block + KW_BRLOCK_STRIDE - 1) & ~(uintptr_t)(KW_BRLOCK_STRIDE - 1);
    l->lines = (unsigned char *)p;
    if (pthread_mutex_init(&l->writers, NULL) != 0)
        goto fail_mutex;
    for (unsigned i = 0; i < N_LINES; i++)
        atomic_init(line(l, i), 0);
    atomic_init(&l->writer, 0);
    atomic_init(&l->owner, 0);
    return KW_OK;

fail_mutex:
    kw_free(l->block);
fail_alloc:
    return KW_ENOMEM;
}

void kw__brlock_close(kw_brlock_t *l)
{
    pthread_mutex_destroy(&l->writers);
    kw_free(l->block);
    l->block = NULL;
    l->lines = NULL;
}

/* ---- readers ---- */

/* Takes this reader's count back out of `w`; the last one out while a writer is active
 * wakes it (it drains `w` with futex_wait on it). */
static inline void leave(kw_brlock_t *l, _Atomic uint32_t *w)
{
    if (atomic_fetch_sub(w, 1) == 1 && atomic_load(&l->writer) != 0)
        word_wake(w, 1);
}

/* One attempt: counts the reader on `w`, then looks at the writer word. */
static inline bool try_enter(kw_brlock_t *l, _Atomic uint32_t *w)
{
    atomic_fetch_add(w, 1);
    if (atomic_load(&l->writer) == 0)
        return true;
    leave(l, w);
    return false;
}

/* A writer is active: wait it out among the waiting readers, whom the next writer lets in
 * before it raises the word. */
static void rd_slow(kw_brlock_t *l, _Atomic uint32_t *w)
{
    kw_assert(atomic_load_explicit(&l->owner, memory_order_relaxed) != my_token());
    _Atomic uint32_t *waiting = line(l, LINE_WAITING);
    atomic_fetch_add(waiting, 1);
    for (int spins = 0;;) {
        uint32_t v = atomic_load(&l->writer);
        if (v == 0) {
            if (try_enter(l, w))
                break;
            continue;
        }
        if (spins++ < READER_SPINS) {
            cpu_relax();
            continue;
        }
        /* Going to sleep: mark the word so the writer's unlock wakes the sleepers. */
        if (v == 1 && !atomic_compare_exchange_strong(&l->writer, &v, 2))
            continue;
        word_wait(&l->writer, 2, false);
    }
    if (atomic_fetch_sub(waiting, 1) == 1)
        word_wake(waiting, 1);
}

void kw__brlock_rdlock(kw_brlock_t *l)
{
    int s = my_slot();
    _Atomic uint32_t *w = line(l, s >= 0 ? LINE_SLOT(s) : LINE_SHARED);
    /* A slot belongs to one thread: a count already there is this thread's own read, and
     * no writer can be past its drain while it stands. Nesting stays forbidden (the shared
     * count cannot tell), but through a slot it cannot deadlock. */
    if (s >= 0 && atomic_load_explicit(w, memory_order_relaxed) != 0) {
        atomic_fetch_add(w, 1);
        return;
    }
    if (!try_enter(l, w))
        rd_slow(l, w);
}

/* ---- writers ---- */

static void drain(_Atomic uint32_t *w)
{
    for (uint32_t v; (v = atomic_load(w)) != 0;)
        word_wait(w, v, true);
}

void kw__brlock_wrlock(kw_brlock_t *l)
{
    /* A write inside this thread's own write or read would wait for itself forever. */
    kw_assert(atomic_load_explicit(&l->owner, memory_order_relaxed) != my_token());
    kw_assert(reg_slot < 0 ||
              atomic_load_explicit(line(l, LINE_SLOT(reg_slot)), memory_order_relaxed) == 0);
    kw_assert(pthread_mutex_lock(&l->writers) == 0);
    drain(line(l, LINE_WAITING));
    atomic_store_explicit(&l->owner, my_token(), memory_order_relaxed);
    atomic_store(&l->writer, 1);
    uint32_t high = atomic_load(&reg_high);
    drain(line(l, LINE_SHARED));
    for (uint32_t i = 0; i < high; i++)
        drain(line(l, LINE_SLOT(i)));
}

static void wr_unlock(kw_brlock_t *l)
{
    atomic_store_explicit(&l->owner, 0, memory_order_relaxed);
    if (atomic_exchange(&l->writer, 0) == 2)
        word_wake(&l->writer, INT_MAX);
    kw_assert(pthread_mutex_unlock(&l->writers) == 0);
}

void kw__brlock_unlock(kw_brlock_t *l)
{
    if (atomic_load_explicit(&l->owner, memory_order_relaxed) == my_token()) {
        wr_unlock(l);
        return;
    }
    /* A thread that read through the shared count may have been given a slot since (by
     * another lock): its slot here is then 0. */
    int s = reg_slot;
    _Atomic uint32_t *w = NULL;
    if (s >= 0 && atomic_load_explicit(line(l, LINE_SLOT(s)), memory_order_relaxed) != 0)
        w = line(l, LINE_SLOT(s));
    else
        w = line(l, LINE_SHARED);
    kw_assert(atomic_load_explicit(w, memory_order_relaxed) != 0);
    leave(l, w);
}
