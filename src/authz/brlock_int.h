/*
 * authz/brlock_int.h - the engine's reader-writer lock: a "big reader" lock whose readers
 * write only cache lines of their own. Internal to src/authz (engine.c is its user).
 *
 * Why: a pthread rwlock keeps one reader count that every reader on every core writes
 * twice per query, so reads stop scaling with cores. Here each thread that reads gets a
 * slot (a 128-byte line, per lock) on its first read: a reader marks its slot, then
 * checks the writer word, which only writers write. A writer raises the writer word and
 * waits until every slot has drained.
 *
 * Threads: any thread may read or write. Slots are process-wide thread indices (at most
 * KW_BRLOCK_SLOTS live at once) given out on a thread's first read and handed back by a
 * pthread key destructor when it exits; a thread that finds none free (or exits and reads
 * again from another destructor) reads through the lock's one shared count instead:
 * correct, only not scalable.
 * Fairness: writers are preferred (a reader that sees the writer word backs off), and
 * one at a time (a mutex). Readers that backed off enter before the next writer raises
 * the word, so a writer stream cannot starve them: a reader waits for at most the writer
 * it met. Waits spin briefly, then sleep on a futex (no lost wakeups: every wait is
 * futex_wait on the word whose change it waits for, with the value it saw).
 * Recursion: none. A thread holding the lock (either way) must not take it again: a
 * nested read deadlocks (or aborts, when detected) as soon as a writer waits, and a read
 * or a write inside the thread's own write aborts. This is the rule the pthread rwlock
 * (writer-preferring, non-recursive) imposed before.
 * Errors: kw__brlock_init returns KW_OK or KW_ENOMEM; the others cannot fail (misuse
 * aborts through kw_assert).
 */
#ifndef KW_AUTHZ_BRLOCK_INT_H
#define KW_AUTHZ_BRLOCK_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "base/base.h"

/* Slots per lock (threads that read with a slot of their own at the same time), and the
 * stride that keeps two slots off one cache line and off an adjacent-line prefetch pair. */
#define KW_BRLOCK_SLOTS 128
#define KW_BRLOCK_STRIDE 128

typedef struct kw_brlock {
    /* Written by writers only, read by every reader: 0 no writer; 1 a writer holds the
     * lock or is waiting for readers to drain; 2 the same, with readers asleep on it. */
    _Atomic uint32_t writer;
    _Atomic uintptr_t owner; /* the writing thread's token, 0 when none */
    pthread_mutex_t writers; /* one writer at a time */
    /* The lines written by readers, KW_BRLOCK_STRIDE apart: [0] the shared count (readers
     * without a slot), [1] readers that backed off for a writer and are not in yet,
     * [2 + i] slot i. `block` is the allocation `lines` is aligned into. */
    unsigned char *lines;
    void *block;
} kw_brlock_t;

/* KW_OK or KW_ENOMEM (nothing to close then). */
KW_NODISCARD int kw__brlock_init(kw_brlock_t *l);
/* No thread may hold or wait for the lock. */
void kw__brlock_close(kw_brlock_t *l);
void kw__brlock_rdlock(kw_brlock_t *l);
void kw__brlock_wrlock(kw_brlock_t *l);
/* Releases whichever way this thread holds the lock. */
void kw__brlock_unlock(kw_brlock_t *l);

/* For tests: this thread's slot index, or -1 when it reads through the shared count (or
 * has not read yet). */
int kw__brlock_thread_slot(void);

#endif
