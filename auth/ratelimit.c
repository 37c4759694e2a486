/* auth/ratelimit.c: GCRA rate limits for the OAuth endpoints, per client and per source
 * address, each bucket owned by one shard (DESIGN §1: ownership by hash).
 *
 * GCRA (the generic cell rate algorithm, ITU-T I.371): a bucket is one number, its
 * theoretical arrival time (TAT). With emission interval T = 1 s / rate and tolerance
 * tau = T * burst, a request at `now` is allowed when max(TAT, now) - now <= tau, and then
 * TAT = max(TAT, now) + T; otherwise it may retry after max(TAT, now) - now - tau. Times
 * are CLOCK_MONOTONIC microseconds, so a wall-clock step never lifts or extends a limit
 * (SECURITY F13).
 *
 * The bucket of key k lives on shard xxh3(k) % shards. A request on its owner is decided
 * in place; elsewhere the request parks and asks the owner over the rings (the answer
 * comes back the same way). Each shard keeps its buckets in a fixed table with two
 * candidate slots per key; an idle bucket (TAT in the past) is the same as a fresh one,
 * so it may be overwritten, and when both candidates are busy the one that frees first is
 * taken over. The limits are TESSERA_RATE_CLIENT_PER_S and TESSERA_RATE_ADDRESS_PER_S
 * with a burst of TESSERA_RATE_BURST_S seconds' worth (0 turns a limit off); a tenant's
 * settings.rate_limit overrides them ({"client_per_s", "address_per_s", "burst_s"}) once a
 * shard holds the tenant's keys (before that, for a tenant's first requests on a shard, the
 * defaults apply). A client's bucket is keyed on the client and the digest of the secret
 * presented (auth_rate_admit), so wrong secrets never spend the real client's quota.
 *
 * Logins add a third bucket per account (SECURITY P05): keyed on the tenant and the
 * normalised submitted username or email, whether or not the account exists (so its 429
 * says nothing about existence), TESSERA_RATE_ACCOUNT_PER_MIN a minute (default 30; 0 turns
 * it off) with a burst of AUTH_RATE_ACCOUNT_BURST tries; settings.rate_limit
 * {"account_per_min", "account_burst"} overrides them. The endpoints that mail a submitted
 * address take a fourth, per recipient (the address in lower case, account or not):
 * TESSERA_RATE_RECIPIENT_PER_HOUR an hour (default 5) with a burst of
 * AUTH_RATE_RECIPIENT_BURST; {"recipient_per_hour", "recipient_burst"} overrides them. A
 * bucket's quota counts over a window (a second, a minute for the account, an hour for the
 * recipient): the emission interval window / quota travels to the owner in microseconds. */
#include "auth/auth_int.h"

#include <assert.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "core/log.h"
#include "crypto/jscan.h"

#define RATE_USEC 1000000ull
#define RATE_POLICY_MAX 10000000 /* a tenant's per-second limit or burst seconds, at most */
#define RATE_POLICY_FIELDS 7     /* the members of settings.rate_limit */
#define RATE_KEY_TEXT_MAX (AUTH_SLUG_MAX + 16 + AUTH_EMAIL_MAX + 2) /* slug, kind, the longest
                                                                    * value: an address */
_Static_assert(AUTH_EMAIL_MAX >= AUTH_CLIENT_ID_MAX && AUTH_EMAIL_MAX >= AUTH_USERNAME_MAX,
               "a key's longest value is an email address");
_Static_assert((uint64_t)AUTH_RATE_ACCOUNT_WINDOW_S * RATE_USEC <= UINT32_MAX,
               "the longest interval (one per window) fits the ask's 32 bits");

struct rate_bucket {
    uint64_t key; /* 0: never used */
    uint64_t tat_us;
};

struct auth_rate {
    struct rate_bucket buckets[AUTH_RATE_SLOTS];
};

struct auth_rate *auth_rate_create(void)
{
    return calloc(1, sizeof(struct auth_rate));
}

void auth_rate_destroy(struct auth_rate *rate)
{
    free(rate);
}

uint64_t auth_rate_key(const char *tenant, const char *kind, const char *value)
{
    char buf[RATE_KEY_TEXT_MAX];
    int n = snprintf(buf, sizeof(buf), "%s%c%s%c%s", tenant, 0, kind, 0, value);
    if (n < 0 || (size_t)n >= sizeof(buf))
        n = (int)sizeof(buf) - 1;
    return XXH3_64bits(buf, (size_t)n) | 1;
}

unsigned auth_rate_owner(const struct auth *auth, uint64_t key)
{
    return (unsigned)((key >> 17) % auth->cfg->shards);
}

/* The bucket for key: its own slot, else an idle or the soonest-free of its two. */
static struct rate_bucket *rate_bucket(struct auth_rate *rate, uint64_t key, uint64_t now)
{
    struct rate_bucket *a = &rate->buckets[key % AUTH_RATE_SLOTS];
    struct rate_bucket *b = &rate->buckets[(key >> 32) % AUTH_RATE_SLOTS];
    if (a->key == key)
        return a;
    if (b->key == key)
        return b;
    struct rate_bucket *take = a->tat_us <= now ? a : b->tat_us <= now ? b : a->tat_us <= b->tat_us ? a : b;
    take->key = key;
    take->tat_us = 0;
    return take;
}

/* GCRA with emission interval interval_us (per_s or window / quota). */
static uint64_t rate_take_interval(struct auth_rate *rate, uint64_t key, uint64_t interval,
                                   uint32_t burst)
{
    assert(interval > 0);
    uint64_t now = loop_now_us();
    uint64_t tolerance = interval * burst;
    struct rate_bucket *bucket = rate_bucket(rate, key, now);
    uint64_t tat = bucket->tat_us > now ? bucket->tat_us : now;
    if (tat - now > tolerance)
        return tat - now - tolerance; /* denied: retry after this many microseconds */
    bucket->tat_us = tat + interval;
    return 0;
}

uint64_t auth_rate_take(struct auth_rate *rate, uint64_t key, uint32_t per_s, uint32_t burst)
{
    assert(per_s > 0);
    return rate_take_interval(rate, key, RATE_USEC / per_s, burst);
}

/* The seconds bucket i's quota counts over. */
static uint32_t rate_window_s(int i)
{
    return i == AUTH_RATE_ACCOUNT     ? AUTH_RATE_ACCOUNT_WINDOW_S
           : i == AUTH_RATE_RECIPIENT ? AUTH_RATE_RECIPIENT_WINDOW_S
                                      : 1;
}

/* The emission interval of bucket i of chk: its window over its quota (at least 1 us). */
static uint32_t rate_interval_us(const struct auth_rate_check *chk, int i)
{
    uint64_t interval = (uint64_t)rate_window_s(i) * RATE_USEC / chk->per_s[i];
    return interval > 0 ? (uint32_t)interval : 1;
}

/* ---- Asking another shard ------------------------------------------------------------------ */

/* On the owner: decide. The policy travels in b: interval_us (high 32 bits), burst. */
struct ring_msg auth_rate_on_ask(struct auth_rate *rate, const struct ring_msg *ask)
{
    uint64_t retry = rate_take_interval(rate, ask->a, ask->b >> 32, (uint32_t)ask->b);
    return (struct ring_msg){ .kind = AUTH_MSG_RATE_ANSWER, .a = retry, .b = ask->a, .ptr = ask->ptr };
}

int auth_rate_ask(struct auth_wait *w, uint64_t key, uint32_t interval_us, uint32_t burst)
{
    assert(interval_us > 0);
    struct ring_msg ask = { .kind = AUTH_MSG_RATE_ASK, .a = key,
                            .b = (uint64_t)interval_us << 32 | burst, .ptr = w };
    return loop_send_message(w->loop, auth_rate_owner(w->auth, key), &ask);
}

/* ---- A request's limits ------------------------------------------------------------------- */

static const char *const rate_bucket_names[AUTH_RATE_BUCKETS] = { "address", "client", "account",
                                                                   "recipient" };

void auth_rate_policy_parse(const char *json, struct auth_rate_policy *out)
{
    static const char *const names[RATE_POLICY_FIELDS] = { "client_per_s", "address_per_s",
                                                           "burst_s", "account_per_min",
                                                           "account_burst", "recipient_per_hour",
                                                           "recipient_burst" };
    int64_t *fields[RATE_POLICY_FIELDS] = { &out->client_per_s, &out->address_per_s, &out->burst_s,
                                            &out->account_per_min, &out->account_burst,
                                            &out->recipient_per_hour, &out->recipient_burst };
    struct jscan_object obj;
    bool parsed = jscan_object(json, strlen(json), &obj) == 0;
    for (size_t i = 0; i < RATE_POLICY_FIELDS; i++) {
        const struct jscan_value *v = parsed ? jscan_get(&obj, names[i]) : NULL;
        int64_t n = -1;
        if (v == NULL || jscan_integer(v, &n) != 0 || n < 0 || n > RATE_POLICY_MAX)
            n = -1; /* absent or malformed: the server's default */
        *fields[i] = n;
    }
}

static uint32_t rate_pick(int64_t tenant, uint32_t fallback)
{
    return tenant >= 0 ? (uint32_t)tenant : fallback;
}

/* The limits of chk's buckets under the tenant's policy (NULL: the server's defaults). */
static void rate_apply(const struct auth *auth, const struct auth_rate_policy *policy, struct auth_rate_check *chk)
{
    static const struct auth_rate_policy defaults = { -1, -1, -1, -1, -1, -1, -1 };
    const struct auth_rate_policy *p = policy ? policy : &defaults;
    uint32_t rates[AUTH_RATE_BUCKETS] = { rate_pick(p->address_per_s, auth->cfg->rate_address_per_s),
                                          rate_pick(p->client_per_s, auth->cfg->rate_client_per_s),
                                          rate_pick(p->account_per_min, auth->cfg->rate_account_per_min),
                                          rate_pick(p->recipient_per_hour, auth->cfg->rate_recipient_per_hour) };
    uint32_t burst_s = rate_pick(p->burst_s, auth->cfg->rate_burst_s);
    for (int i = 0; i < AUTH_RATE_BUCKETS; i++) {
        chk->per_s[i] = chk->keys[i] ? rates[i] : 0;
        if (i == AUTH_RATE_ACCOUNT)
            chk->burst[i] = rate_pick(p->account_burst, AUTH_RATE_ACCOUNT_BURST);
        else if (i == AUTH_RATE_RECIPIENT)
            chk->burst[i] = rate_pick(p->recipient_burst, AUTH_RATE_RECIPIENT_BURST);
        else
            chk->burst[i] = chk->per_s[i] * burst_s;
        if (chk->burst[i] == 0 && chk->per_s[i] > 0)
            chk->burst[i] = 1;
    }
}

void auth_rate_prepare(const struct auth *auth, const char *slug, const struct auth_rate_policy *policy,
                       const struct auth_rate_subjects *subjects, struct auth_rate_check *chk)
{
    memset(chk, 0, sizeof(*chk));
    snprintf(chk->slug, sizeof(chk->slug), "%s", slug);
    const char *values[AUTH_RATE_BUCKETS] = { subjects->peer_ip, subjects->client_id, subjects->account,
                                              subjects->recipient };
    for (int i = 0; i < AUTH_RATE_BUCKETS; i++)
        chk->keys[i] = values[i][0] ? auth_rate_key(slug, rate_bucket_names[i], values[i]) : 0;
    if (chk->keys[AUTH_RATE_CLIENT] != 0 && subjects->client_secret_sha256 != NULL)
        chk->keys[AUTH_RATE_CLIENT] = XXH3_64bits_withSeed(subjects->client_secret_sha256, HASH_SHA256_BYTES,
                                                           chk->keys[AUTH_RATE_CLIENT]) | 1;
    rate_apply(auth, policy, chk);
}

bool auth_rate_local(const struct auth *auth, const struct loop *loop, struct auth_rate_check *chk)
{
    struct auth_rate *rate = auth->shards[loop_index(loop)]->rate;
    for (int i = 0; i < AUTH_RATE_BUCKETS; i++) {
        if (chk->per_s[i] == 0)
            continue;
        if (auth_rate_owner(auth, chk->keys[i]) != loop_index(loop)) {
            chk->remote[i] = true;
            continue;
        }
        uint64_t retry = rate_take_interval(rate, chk->keys[i], rate_interval_us(chk, i),
                                            chk->burst[i]);
        if (retry > 0) {
            chk->denied = i;
            chk->retry_us = retry;
            return false;
        }
    }
    return true;
}

bool auth_rate_has_remote(const struct auth_rate_check *chk)
{
    for (int i = 0; i < AUTH_RATE_BUCKETS; i++) {
        if (chk->remote[i])
            return true;
    }
    return false;
}

bool auth_rate_pending(const struct auth_rate_check *chk)
{
    return chk->later || auth_rate_has_remote(chk);
}

/* 429 (RFC 6585 §4) with Retry-After and the IETF RateLimit-Policy / RateLimit fields
 * (draft-ietf-httpapi-ratelimit-headers: q = quota per window w, r = remaining, t = seconds
 * until it is available again). */
void auth_rate_respond(struct http_ctx *ctx, const struct auth_rate_check *chk)
{
    int i = chk->denied;
    unsigned long long secs = (chk->retry_us + 999999) / 1000000;
    if (secs == 0)
        secs = 1;
    char *text = http_scratch_alloc(ctx, 3 * 64);
    if (text != NULL) {
        int a = snprintf(text, 64, "%llu", secs);
        int b = snprintf(text + 64, 64, "\"%s\";q=%u;w=%u", rate_bucket_names[i],
                         (unsigned)chk->per_s[i], (unsigned)rate_window_s(i));
        int c = snprintf(text + 128, 64, "\"%s\";r=0;t=%llu", rate_bucket_names[i], secs);
        http_header_add(ctx, "Retry-After", slice_make(text, (size_t)a));
        http_header_add(ctx, "RateLimit-Policy", slice_make(text + 64, (size_t)b));
        http_header_add(ctx, "RateLimit", slice_make(text + 128, (size_t)c));
    }
    http_respond_problem(ctx, 429, "too many requests; retry later");
}

/* Prepares the buckets of subjects (the peer's address filled in here), decides those this
 * shard owns; false when answered 429. */
static bool rate_admit(struct http_ctx *ctx, const struct auth *auth, struct auth_rate_subjects *subjects,
                       struct auth_rate_check *limits)
{
    char slug[AUTH_SLUG_MAX + 1], ip[AUTH_IP_MAX + 1];
    auth_slug_copy(ctx->params[0], slug);
    http_client_address(ctx, ip, sizeof(ip));
    subjects->peer_ip = ip;
    const struct auth_tenant *tenant = auth_tenant_cached(auth, ctx->loop, slug);
    auth_rate_prepare(auth, slug, tenant ? &tenant->rate : NULL, subjects, limits);
    if (tenant == NULL) {
        limits->later = true; /* the tenant's own limits are not known here yet */
        return true;
    }
    if (auth_rate_local(auth, ctx->loop, limits))
        return true;
    auth_rate_respond(ctx, limits);
    return false;
}

bool auth_rate_admit(struct http_ctx *ctx, const struct auth *auth, const char *client_id,
                     const uint8_t *secret_sha256, struct auth_rate_check *limits)
{
    struct auth_rate_subjects subjects = { .client_id = client_id, .client_secret_sha256 = secret_sha256,
                                           .account = "", .recipient = "" };
    return rate_admit(ctx, auth, &subjects, limits);
}

bool auth_rate_admit_account(struct http_ctx *ctx, const struct auth *auth, const char *client_id,
                             const uint8_t *secret_sha256, const char *account, struct auth_rate_check *limits)
{
    struct auth_rate_subjects subjects = { .client_id = client_id, .client_secret_sha256 = secret_sha256,
                                           .account = account, .recipient = "" };
    return rate_admit(ctx, auth, &subjects, limits);
}

bool auth_rate_admit_recipient(struct http_ctx *ctx, const struct auth *auth, const char *address,
                               struct auth_rate_check *limits)
{
    char lower[AUTH_EMAIL_MAX + 1];
    size_t n = 0;
    for (; address[n] != '\0' && n < AUTH_EMAIL_MAX; n++)
        lower[n] = (char)tolower((unsigned char)address[n]); /* stored and matched as lower() */
    lower[n] = '\0';
    struct auth_rate_subjects subjects = { .client_id = "", .account = "", .recipient = lower };
    return rate_admit(ctx, auth, &subjects, limits);
}

static void rate_respond_resumed(struct http_ctx *ctx, void *state)
{
    struct auth_wait *w = state;
    auth_rate_respond(ctx, &w->rate);
}

int auth_rate_remote(struct auth_wait *w, void (*next)(struct auth_wait *w))
{
    struct auth_shard *shard = w->auth->shards[loop_index(w->loop)];
    w->rate_next = next;
    w->rate_pending = 0;
    w->rate.retry_us = 0;
    for (int i = 0; i < AUTH_RATE_BUCKETS; i++) {
        if (!w->rate.remote[i])
            continue;
        if (shard->rate_asks >= AUTH_RATE_ASKS_MAX ||
            auth_rate_ask(w, w->rate.keys[i], rate_interval_us(&w->rate, i),
                          w->rate.burst[i]) != 0) {
            w->rate_failed = true; /* an owner's ring is full: back-pressure */
            continue;
        }
        w->rate_pending++;
        shard->rate_asks++;
    }
    return w->rate_pending > 0 ? 0 : -TE_FULL;
}

/* The tenant is known (or could not be had: the defaults apply): decide as if admitted now. */
static void rate_tenant_ready(struct auth_wait *w, struct auth_tenant *tenant)
{
    rate_apply(w->auth, tenant ? &tenant->rate : NULL, &w->rate);
    auth_tenant_put(w->auth, w->loop, tenant);
    w->rate.later = false;
    if (!auth_rate_local(w->auth, w->loop, &w->rate))
        http_resume(w, rate_respond_resumed);
    else if (!auth_rate_has_remote(&w->rate))
        w->rate_next(w);
    else if (auth_rate_remote(w, w->rate_next) != 0)
        auth_answer(w, 503, AUTH_BUSY_DETAIL);
}

int auth_rate_continue(struct http_ctx *ctx, struct auth_wait *w, void (*next)(struct auth_wait *w))
{
    if (!w->rate.later)
        return auth_rate_remote(w, next);
    w->rate_next = next;
    auth_tenant_get(ctx, w, w->rate.slug, rate_tenant_ready);
    return 0;
}

void auth_rate_answered(struct auth_wait *w, const struct ring_msg *answer)
{
    w->auth->shards[loop_index(w->loop)]->rate_asks--;
    w->rate_pending--;
    if (answer->a > 0 && answer->a > w->rate.retry_us) {
        w->rate.retry_us = answer->a;
        for (int i = 0; i < AUTH_RATE_BUCKETS; i++) {
            if (answer->b == w->rate.keys[i])
                w->rate.denied = i; /* the answer names its key */
        }
    }
    if (w->rate_pending > 0)
        return;
    if (w->rate.retry_us > 0)
        http_resume(w, rate_respond_resumed);
    else if (w->rate_failed)
        auth_answer(w, 503, AUTH_BUSY_DETAIL);
    else
        w->rate_next(w);
}
