/* core/workers.c: the worker pool. Shards hand it blocking or CPU-heavy jobs; its
 * threads run them and hand each job back to its shard, which calls job->done on
 * its own thread.
 *
 * Submission: two FIFOs of jobs (linked through job->next, no allocation), urgent and
 * ordinary, under one mutex, with a condition variable the idle workers sleep on; a
 * worker takes an urgent job first. A lock is fine here:
 * a job is by definition work of 50 µs or more (DESIGN §1), so a short critical
 * section per job is noise, and the request hot path (verification, introspection)
 * never submits.
 *
 * Bound: `in_flight` counts jobs queued, running, or completed but not yet drained
 * by their shard; ordinary submits stop at WORKERS_JOBS_MAX and answer -TE_FULL (503 +
 * Retry-After, DESIGN §6), urgent ones may use WORKERS_URGENT_RESERVE places more. Counting undrained completions too means
 * the pool's memory of a shard's jobs is bounded even if a shard is slow to drain.
 *
 * Completion: each shard has a lock-free multi-producer list: a worker pushes the
 * finished job with a CAS on its head; the shard takes the whole list with one
 * exchange (so there is no ABA: nothing is ever popped singly), reverses it into
 * completion order and appends it to a list only the shard touches. Waking uses the
 * same flag-then-eventfd protocol as the mailbox, with the same argument for why no
 * wake-up is lost (core/ring.c, top): the worker's CAS (S1) and flag load/exchange
 * (S2), the shard's flag clear (R1) and list exchange (R2) are all seq_cst, so if a
 * worker skips the eventfd write, either the shard's exchange saw its job or another
 * thread set the flag after the clear and wrote the eventfd. */
#include "core/workers.h"
#include "core/loop.h"
#include "core/wake.h"

#include <assert.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Thread names are "tessera-wrk-N" in the kernel's 16 bytes (15 + NUL): N up to 999
 * fits. 256 threads is already far more than the cores of one machine, which is what
 * CPU-bound jobs can use; blocking jobs (outbound HTTP) should not need more. */
#define WORKERS_THREADS_MAX 256
/* Shards are one per core; the mailbox has the same ceiling (core/ring.c). */
#define WORKERS_SHARDS_MAX 256
#define WORKERS_THREAD_NAME_BYTES 16 /* pthread_setname_np's limit, NUL included */
/* The workers' niceness where SCHED_IDLE is refused: below the shards, which run at the
 * process's (usually 0). */
#define WORKERS_NICE 10
#define WORKERS_CACHE_LINE_BYTES 64

/* Per shard. The first line is written by workers (pushes, flag sets) and by the
 * shard when it drains; the second is the shard's alone. */
struct workers_shard {
    alignas(WORKERS_CACHE_LINE_BYTES) struct worker_job *_Atomic completed; /* newest first */
    struct wake wake;
    alignas(WORKERS_CACHE_LINE_BYTES) struct worker_job *ready_head; /* oldest first */
    struct worker_job *ready_tail;
};

/* Jobs linked through job->next, oldest first. */
struct workers_fifo {
    struct worker_job *head;
    struct worker_job *tail;
};

struct workers {
    pthread_mutex_t lock;
    pthread_cond_t wake; /* a job was queued, or the pool is stopping */
    struct workers_fifo urgent;    /* under lock: taken before any ordinary job */
    struct workers_fifo ordinary;  /* under lock */
    bool stopping;                 /* under lock */
    /* <= WORKERS_JOBS_MAX + WORKERS_URGENT_RESERVE; ordinary jobs stop at WORKERS_JOBS_MAX */
    alignas(WORKERS_CACHE_LINE_BYTES) atomic_uint in_flight;
    unsigned shards;
    unsigned threads_started;
    pthread_t *threads;
    struct workers_shard *shard;
};

/* aligned_alloc wants a size that is a multiple of the alignment: the alignas members
 * make it so. */
_Static_assert(sizeof(struct workers) % WORKERS_CACHE_LINE_BYTES == 0, "aligned_alloc size");
_Static_assert(sizeof(struct workers_shard) % WORKERS_CACHE_LINE_BYTES == 0, "aligned_alloc size");

/* Hands a finished job back to its shard and wakes the shard if it needs waking. */
static void workers_complete(struct workers *workers, struct worker_job *job)
{
    assert(job->shard < workers->shards);
    struct workers_shard *shard = &workers->shard[job->shard];
    struct worker_job *head = atomic_load_explicit(&shard->completed, memory_order_relaxed);
    do {
        job->next = head;
    } while (!atomic_compare_exchange_weak_explicit(&shard->completed, &head, job,
                                                    memory_order_seq_cst,
                                                    memory_order_relaxed)); /* S1 */
    wake_signal(&shard->wake); /* S2 */
}

static void workers_fifo_push(struct workers_fifo *q, struct worker_job *job)
{
    if (q->tail == NULL)
        q->head = job;
    else
        q->tail->next = job;
    q->tail = job;
}

static struct worker_job *workers_fifo_pop(struct workers_fifo *q)
{
    struct worker_job *job = q->head;
    if (job != NULL) {
        q->head = job->next;
        if (q->head == NULL)
            q->tail = NULL;
    }
    return job;
}

/* Takes the oldest urgent job, else the oldest ordinary one, sleeping while there is
 * none. NULL: stop. */
static struct worker_job *workers_next(struct workers *workers)
{
    pthread_mutex_lock(&workers->lock);
    while (workers->urgent.head == NULL && workers->ordinary.head == NULL && !workers->stopping)
        pthread_cond_wait(&workers->wake, &workers->lock);
    struct worker_job *job = workers_fifo_pop(&workers->urgent);
    if (job == NULL)
        job = workers_fifo_pop(&workers->ordinary);
    pthread_mutex_unlock(&workers->lock);
    return job;
}

/* Workers share the cores the shards are pinned to, and must not take them from the hot path
 * (SECURITY F15: verification and introspection keep their p99 while logins flood the pool).
 * SCHED_IDLE (sched(7)): a worker runs on whatever a shard leaves idle, and a shard that
 * wakes preempts it at once. Niceness alone did not do that: under the EEVDF scheduler a
 * nice-10 worker keeps the core for the rest of its slice when a shard wakes (run to
 * parity), and perf/login measured introspection's p99 at 3.7-4.2x its value alone while one
 * worker hashed on the shard's core, against 1.1-1.3x with SCHED_IDLE, at the same login
 * rates. The cost: while every shard is saturated, hashing and RSA signing wait (their jobs
 * expire and answer 503, DESIGN §1). Per thread, allowed unprivileged; where refused
 * (a seccomp policy), niceness is the fallback, and a refusal of that leaves the default. */
static void workers_lower_priority(void)
{
    struct sched_param param = { .sched_priority = 0 };
    if (pthread_setschedparam(pthread_self(), SCHED_IDLE, &param) != 0)
        (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), WORKERS_NICE);
}

static void *workers_thread_main(void *arg)
{
    struct workers *workers = arg;
    workers_lower_priority();
    for (;;) {
        struct worker_job *job = workers_next(workers);
        if (job == NULL)
            return NULL; /* stopping */
        job->next = NULL;
        job->expired = job->run_by_us != 0 && loop_now_us() > job->run_by_us;
        if (!job->expired)
            job->run(job);
        workers_complete(workers, job);
    }
}

/* Drops the queued jobs (their requests are gone: the shards have stopped), lets the
 * running ones finish and joins the threads. Running the queue out instead could take
 * WORKERS_JOBS_MAX Argon2id hashes, seconds past the shutdown deadline (SECURITY F16). */
static void workers_stop(struct workers *workers)
{
    pthread_mutex_lock(&workers->lock);
    workers->stopping = true;
    workers->urgent = (struct workers_fifo){ 0 };
    workers->ordinary = (struct workers_fifo){ 0 };
    pthread_cond_broadcast(&workers->wake);
    pthread_mutex_unlock(&workers->lock);
    for (unsigned i = 0; i < workers->threads_started; i++) {
        int rc = pthread_join(workers->threads[i], NULL);
        assert(rc == 0);
        (void)rc;
    }
    workers->threads_started = 0;
    assert(workers->urgent.head == NULL && workers->ordinary.head == NULL);
}

/* Starts the threads with every signal blocked, so process-directed signals go to
 * the threads that handle them (main, shards), never to a worker mid-job. */
static int workers_start(struct workers *workers, unsigned threads)
{
    sigset_t all, saved;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    int rc = 0;
    for (unsigned i = 0; i < threads && rc == 0; i++) {
        rc = pthread_create(&workers->threads[i], NULL, workers_thread_main, workers);
        if (rc != 0)
            break;
        workers->threads_started++;
        char name[WORKERS_THREAD_NAME_BYTES];
        _Static_assert(WORKERS_THREADS_MAX <= 1000, "three digits in the thread name");
        snprintf(name, sizeof(name), "tessera-wrk-%u", i % 1000);
        pthread_setname_np(workers->threads[i], name); /* a diagnostic: failure is harmless */
    }
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    return rc == 0 ? 0 : -TE_NOMEM;
}

static int workers_shards_init(struct workers *workers, unsigned shards)
{
    workers->shard = aligned_alloc(WORKERS_CACHE_LINE_BYTES,
                                   shards * sizeof(struct workers_shard));
    if (workers->shard == NULL)
        return -TE_NOMEM;
    workers->shards = shards;
    for (unsigned i = 0; i < shards; i++) {
        memset(&workers->shard[i], 0, sizeof(workers->shard[i]));
        atomic_init(&workers->shard[i].completed, NULL);
        workers->shard[i].wake.eventfd = -1;
    }
    for (unsigned i = 0; i < shards; i++) {
        if (wake_init(&workers->shard[i].wake) != 0)
            return -TE_IO;
    }
    return 0;
}

static void workers_free(struct workers *workers)
{
    if (workers->shard != NULL) {
        for (unsigned i = 0; i < workers->shards; i++)
            wake_close(&workers->shard[i].wake);
    }
    pthread_cond_destroy(&workers->wake);
    pthread_mutex_destroy(&workers->lock);
    free(workers->shard);
    free(workers->threads);
    free(workers);
}

struct workers *workers_create(unsigned threads, unsigned shards)
{
    if (threads == 0 || threads > WORKERS_THREADS_MAX)
        return NULL;
    if (shards == 0 || shards > WORKERS_SHARDS_MAX)
        return NULL;
    struct workers *workers = aligned_alloc(WORKERS_CACHE_LINE_BYTES, sizeof(struct workers));
    if (workers == NULL)
        return NULL;
    memset(workers, 0, sizeof(*workers));
    pthread_mutex_init(&workers->lock, NULL);
    pthread_cond_init(&workers->wake, NULL);
    atomic_init(&workers->in_flight, 0);
    workers->threads = calloc(threads, sizeof(pthread_t));
    if (workers->threads == NULL || workers_shards_init(workers, shards) != 0) {
        workers_free(workers);
        return NULL;
    }
    if (workers_start(workers, threads) != 0) {
        workers_stop(workers);
        workers_free(workers);
        return NULL;
    }
    return workers;
}

void workers_destroy(struct workers *workers)
{
    if (workers == NULL)
        return;
    workers_stop(workers);
    workers_free(workers);
}

/* Reserves one place below limit, or says there is none. */
static bool workers_reserve(struct workers *workers, unsigned limit)
{
    unsigned count = atomic_load_explicit(&workers->in_flight, memory_order_relaxed);
    do {
        assert(count <= WORKERS_JOBS_MAX + WORKERS_URGENT_RESERVE);
        if (count >= limit)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(&workers->in_flight, &count, count + 1,
                                                    memory_order_relaxed,
                                                    memory_order_relaxed));
    return true;
}

static int workers_enqueue(struct workers *workers, unsigned shard, struct worker_job *job, bool urgent,
                           uint64_t run_by_us)
{
    assert(workers != NULL);
    assert(shard < workers->shards);
    assert(job != NULL);
    assert(job->run != NULL);
    assert(job->done != NULL);
    if (!workers_reserve(workers, urgent ? WORKERS_JOBS_MAX + WORKERS_URGENT_RESERVE : WORKERS_JOBS_MAX))
        return -TE_FULL; /* the job was not taken: the caller answers 503 */
    job->shard = shard;
    job->next = NULL;
    job->run_by_us = run_by_us;
    job->expired = false;
    pthread_mutex_lock(&workers->lock);
    assert(!workers->stopping); /* submitting after destroy began is a bug */
    workers_fifo_push(urgent ? &workers->urgent : &workers->ordinary, job);
    pthread_cond_signal(&workers->wake);
    pthread_mutex_unlock(&workers->lock);
    return 0;
}

int workers_submit(struct workers *workers, unsigned shard, struct worker_job *job)
{
    return workers_enqueue(workers, shard, job, false, 0);
}

int workers_submit_by(struct workers *workers, unsigned shard, struct worker_job *job, uint64_t run_by_us)
{
    return workers_enqueue(workers, shard, job, false, run_by_us);
}

int workers_submit_urgent(struct workers *workers, unsigned shard, struct worker_job *job)
{
    return workers_enqueue(workers, shard, job, true, 0);
}

/* Moves every completion the workers have pushed to the shard's ready list,
 * oldest first. */
static void workers_take_completed(struct workers_shard *shard)
{
    struct worker_job *newest = atomic_exchange_explicit(&shard->completed, NULL,
                                                         memory_order_seq_cst); /* R2 */
    struct worker_job *oldest = NULL;
    struct worker_job *last = newest;
    while (newest != NULL) { /* reverse: the list was pushed newest first */
        struct worker_job *next = newest->next;
        newest->next = oldest;
        oldest = newest;
        newest = next;
    }
    if (oldest == NULL)
        return;
    if (shard->ready_tail == NULL)
        shard->ready_head = oldest;
    else
        shard->ready_tail->next = oldest;
    shard->ready_tail = last;
}

size_t workers_drain(struct workers *workers, unsigned shard_index, size_t max)
{
    assert(workers != NULL);
    assert(shard_index < workers->shards);
    struct workers_shard *shard = &workers->shard[shard_index];
    wake_clear(&shard->wake); /* R1 */
    workers_take_completed(shard);
    size_t done = 0;
    while (done < max && shard->ready_head != NULL) {
        struct worker_job *job = shard->ready_head;
        shard->ready_head = job->next;
        if (shard->ready_head == NULL)
            shard->ready_tail = NULL;
        assert(job->shard == shard_index); /* paired with workers_submit */
        job->next = NULL;
        /* Release the place before done, which may submit again (and may free job). */
        unsigned before = atomic_fetch_sub_explicit(&workers->in_flight, 1,
                                                    memory_order_relaxed);
        assert(before > 0);
        (void)before;
        job->done(job);
        done++;
    }
    if (shard->ready_head != NULL)
        wake_signal(&shard->wake); /* stopped at max: wake ourselves for the rest */
    return done;
}

int workers_eventfd(const struct workers *workers, unsigned shard)
{
    assert(workers != NULL);
    assert(shard < workers->shards);
    return workers->shard[shard].wake.eventfd;
}
