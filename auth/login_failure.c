/* auth/login_failure.c: a refused login's failure count, lockout and audit row, committed
 * after its answer (SECURITY P01, P03; DESIGN §4).
 *
 * Why after: STORE_LOGIN_FAILED updates a known user's row (the count and the lock) where an
 * unknown or disabled name has no row to update. A refusal that waited for that commit told
 * them apart by the update's cost: about 40 µs on an idle Postgres, 190-250 µs end to end in
 * perf/login's enumeration run, where a two-sample KS test once told a wrong password from a
 * disabled user apart (p 0.0012 at 200 logins each). Answered as soon as its hash is done,
 * every refusal costs the same lookup and the same hash, and Postgres' work follows it.
 * Follows it strictly: the answer is handed to the kernel (loop_submit) before the statement is
 * sent, since the statement wakes a Postgres backend that the scheduler may run on this core
 * ahead of the rest of the shard's iteration, the answer included.
 *
 * What this keeps:
 * - every refusal is counted, under the user's row lock, with its audit row: its slot is
 *   taken before the answer and its statement sent right after, before the shard does
 *   anything else;
 * - the lockout holds against a login that races it. A login arriving before the previous
 *   failure committed may see the account unlocked and have its password really verified,
 *   but a right password still gets no session: STORE_LOGIN_SUCCEEDED checks the lock under
 *   the same row lock, and it is sent a whole hash (tens of milliseconds) after the failure
 *   that sets the lock. Parallel guesses already had that window: their lookups all run
 *   before any of their failures commits.
 * - no refusal goes uncounted for want of room: a refusal whose statement the store would not
 *   take now (Postgres away, its queue full) or that finds every slot taken is not given; the
 *   answer is 503 + Retry-After, the same for every name since every refusal takes a slot.
 * What it gives up: a statement that fails after it was taken (the connection lost on the
 * way, a full disk, its budget passed) loses that one count and its audit row; it is logged
 * and counted in tessera_login_failures_total{outcome="lost"}.
 *
 * Bounds: AUTH_LOGIN_FAILURES_MAX statements in flight per shard. A stopping shard holds its
 * loop (loop_hold) until its statements are answered or the shutdown deadline passes. */
#include "auth/auth_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

#define FAILURE_POLICY_PARAMS 4 /* STORE_LOGIN_FAILED's $6..$9: the lockout policy */
#define FAILURE_NUM_TEXT 16     /* one of them as decimal text */

struct auth_login_failure {
    struct pg_query q;
    struct auth_login_failures *owner;
    char tenant_id[CT_UUID_TEXT_LEN + 1];
    char user_id[CT_UUID_TEXT_LEN + 1];  /* "" : an unknown (or disabled) name */
    char ip[AUTH_IP_MAX + 1];
    char request_id[HTTP_REQUEST_ID_BYTES_MAX + 1];
};

struct auth_login_failures {
    struct auth *auth;
    struct loop *loop;
    struct loop_timer wake;        /* names the hold; no on_expire: at shutdown there is
                                    * nothing to hurry, only statements to wait for */
    char policy[FAILURE_POLICY_PARAMS][FAILURE_NUM_TEXT]; /* auth_int.h's AUTH_LOCKOUT_*, as text */
    bool stopped;
    unsigned free_count;
    uint16_t free[AUTH_LOGIN_FAILURES_MAX];
    struct auth_login_failure slots[AUTH_LOGIN_FAILURES_MAX];
};

_Static_assert(AUTH_LOGIN_FAILURES_MAX <= UINT16_MAX + 1, "a slot's index fits free[]");

struct auth_login_failures *auth_login_failures_create(struct auth *auth)
{
    struct auth_login_failures *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->auth = auth;
    const int policy[FAILURE_POLICY_PARAMS] = { AUTH_LOCKOUT_THRESHOLD, AUTH_LOCKOUT_FIRST_WAIT_S,
                                                AUTH_LOCKOUT_MAX_WAIT_S, AUTH_LOCKOUT_RESET_S };
    for (unsigned i = 0; i < FAILURE_POLICY_PARAMS; i++)
        snprintf(t->policy[i], FAILURE_NUM_TEXT, "%d", policy[i]);
    for (unsigned i = 0; i < AUTH_LOGIN_FAILURES_MAX; i++) {
        t->slots[i].owner = t;
        t->free[t->free_count++] = (uint16_t)(AUTH_LOGIN_FAILURES_MAX - 1 - i);
    }
    return t;
}

void auth_login_failures_destroy(struct auth_login_failures *t)
{
    free(t);
}

void auth_login_failures_start(struct auth_login_failures *t, struct loop *loop)
{
    t->loop = loop;
}

/* free_count is read by a scrape on any shard (auth_login_failures_pending): relaxed stores. */
static void failures_set_free(struct auth_login_failures *t, unsigned free_count)
{
    __atomic_store_n(&t->free_count, free_count, __ATOMIC_RELAXED);
}

static unsigned failures_in_flight(const struct auth_login_failures *t)
{
    return AUTH_LOGIN_FAILURES_MAX - t->free_count;
}

size_t auth_login_failures_pending(const struct auth_login_failures *t)
{
    return AUTH_LOGIN_FAILURES_MAX - __atomic_load_n(&t->free_count, __ATOMIC_RELAXED);
}

void auth_login_failures_stop(struct auth_login_failures *t)
{
    unsigned left = failures_in_flight(t);
    t->stopped = true;
    if (left == 0)
        return;
    char text[16];
    snprintf(text, sizeof(text), "%u", left);
    log_msg(LOG_ERROR, "refused logins' failures still unanswered by Postgres when the shard stopped",
            "logins", text, NULL); /* each may have committed or not */
    loop_release(t->loop, &t->wake);
}

/* r NULL: the statement never left. */
static void failure_done(struct pg_query *q, const struct pg_result *r)
{
    struct auth_login_failure *f = (struct auth_login_failure *)q;
    struct auth_login_failures *t = f->owner;
    struct auth_shard_stats *stats = &t->auth->shards[loop_index(t->loop)]->stats;
    if (r != NULL && pg_result_outcome(r) == PG_OK) {
        auth_stat_add(&stats->login_failures_recorded, 1);
    } else {
        auth_stat_add(&stats->login_failures_lost, 1);
        log_msg(LOG_ERROR, "a refused login's failure was not recorded", "sqlstate",
                r != NULL ? pg_result_sqlstate(r) : "", "request_id", f->request_id, NULL);
    }
    t->free[t->free_count] = (uint16_t)(f - t->slots);
    failures_set_free(t, t->free_count + 1);
    if (failures_in_flight(t) == 0 && !t->stopped)
        loop_release(t->loop, &t->wake);
}

struct auth_login_failure *auth_login_failure_keep(struct auth *auth, struct loop *loop,
                                                  const struct auth_login_refusal *refusal)
{
    struct auth_login_failures *t = auth->shards[loop_index(loop)]->login_failures;
    if (t->free_count == 0 || t->stopped || !store_accepts(auth_store(auth, loop), STORE_LOGIN_FAILED))
        return NULL;
    struct auth_login_failure *f = &t->slots[t->free[t->free_count - 1]];
    failures_set_free(t, t->free_count - 1);
    if (failures_in_flight(t) == 1)
        loop_hold(loop, &t->wake);
    snprintf(f->tenant_id, sizeof(f->tenant_id), "%s", refusal->tenant_id);
    snprintf(f->user_id, sizeof(f->user_id), "%s", refusal->user_id != NULL ? refusal->user_id : "");
    snprintf(f->ip, sizeof(f->ip), "%s", refusal->ip);
    snprintf(f->request_id, sizeof(f->request_id), "%s", refusal->request_id);
    return f;
}

void auth_login_failure_send(struct auth_login_failure *f)
{
    struct auth_login_failures *t = f->owner;
    struct pg_query *q = &f->q;
    memset(q, 0, sizeof(*q));
    q->params[0] = f->tenant_id;
    q->params[1] = f->user_id[0] ? f->user_id : NULL;
    q->params[2] = f->ip[0] ? f->ip : NULL;
    q->params[3] = f->request_id;
    q->params[4] = f->user_id[0] ? "password" : "unknown_user";
    for (unsigned i = 0; i < FAILURE_POLICY_PARAMS; i++)
        q->params[5 + i] = t->policy[i];
    q->params_count = 5 + FAILURE_POLICY_PARAMS;
    q->done = failure_done;
    if (store_query(auth_store(t->auth, t->loop), STORE_LOGIN_FAILED, q) != PG_OK)
        failure_done(q, NULL); /* accepted a moment ago: its send failed on the way out */
}
