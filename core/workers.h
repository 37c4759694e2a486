/* core/workers.h: the worker pool for blocking or CPU-heavy work (Argon2id, RSA
 * signing, outbound HTTP: anything over ~50 µs, DESIGN §1), so a shard's loop
 * never stalls.
 *
 * A shard submits a job it owns (embedded in its own request state); a worker
 * thread runs job->run; the completion is handed back to the submitting shard,
 * which calls job->done on its own thread when it drains completions (woken
 * through the eventfd it keeps a read in flight on). The number of jobs queued or
 * running is bounded: past it submit answers -TE_FULL and the request gets 503
 * with Retry-After. A completion is never dropped. */
#ifndef TESSERA_CORE_WORKERS_H
#define TESSERA_CORE_WORKERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define WORKERS_JOBS_MAX 1024 /* DESIGN §6: worker queue, 1,024 jobs → 503 + Retry-After */
/* Places only urgent jobs may take, above WORKERS_JOBS_MAX: a shard's concurrent cold key
 * loads and token signatures, far fewer than this, are never refused by a login flood. */
#define WORKERS_URGENT_RESERVE 64

struct worker_job {
    void (*run)(struct worker_job *job);  /* on a worker thread: no shard state touched */
    void (*done)(struct worker_job *job); /* on the submitting shard's thread */
    uint64_t run_by_us;                   /* set by submit: see workers_submit_by */
    bool expired;                         /* set by the pool: run was skipped (done still runs) */
    unsigned shard;                       /* set by workers_submit */
    struct worker_job *next;              /* private */
};

struct workers;

/* threads worker threads serving shards shards. Returns NULL on failure. */
struct workers *workers_create(unsigned threads, unsigned shards);

/* Stops the threads: jobs still queued are dropped (neither run nor done), running ones
 * finish; completions not yet drained are dropped with the pool (call at shutdown only,
 * after the shards have stopped). */
void workers_destroy(struct workers *workers);

/* Called by shard `shard` only. Returns 0, or -TE_FULL when WORKERS_JOBS_MAX jobs
 * are queued or running (the job was not taken). */
int workers_submit(struct workers *workers, unsigned shard, struct worker_job *job);

/* The same for a job whose request stops waiting at run_by_us (loop_now_us's clock): a
 * job still queued then is not run (job->expired is set and done called all the same), so a
 * queue grown under a flood sheds the work nobody waits for any more instead of spending the
 * pool on it, and a login answered 503 never creates a session after all. */
int workers_submit_by(struct workers *workers, unsigned shard, struct worker_job *job, uint64_t run_by_us);

/* Like workers_submit, for short jobs a request on the hot path waits on (a tenant's keys
 * loaded, a token signed): taken by the next free worker ahead of every ordinary job
 * (SECURITY F15: a flood of Argon2id logins must not stall /verify), and refused only
 * once WORKERS_URGENT_RESERVE places past WORKERS_JOBS_MAX are taken too. */
int workers_submit_urgent(struct workers *workers, unsigned shard, struct worker_job *job);

/* Called by shard `shard` only: calls done for up to max completed jobs of this
 * shard, in completion order. Returns how many. */
size_t workers_drain(struct workers *workers, unsigned shard, size_t max);

/* The eventfd shard `shard` reads to learn that completions wait. */
int workers_eventfd(const struct workers *workers, unsigned shard);

#endif
