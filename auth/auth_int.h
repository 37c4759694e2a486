/* auth/auth_int.h: what the files of auth/ share, and nobody else sees. */
#ifndef TESSERA_AUTH_AUTH_INT_H
#define TESSERA_AUTH_AUTH_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "auth/auth.h"
#include "auth/outbox.h"
#include "crypto/ct.h"
#include "crypto/hash.h"
#include "crypto/jwt.h"
#include "crypto/keyset.h"
#include "crypto/password.h"
#include "crypto/seal.h"
#include "crypto/secret.h"
#include "store/keys.h"

#define AUTH_SLUG_MAX 63 /* tenant slugs: [a-z0-9-]{1,63}, the schema's CHECK */
#define AUTH_IP_MAX 63   /* a client address as text (IPv6 is at most 45; http_client_address) */
#define AUTH_TENANT_SLOTS 4096 /* cached tenants' keys per shard (direct-mapped by slug hash) */
#define AUTH_TENANT_TTL_MS 30000 /* a cached key set is reloaded after this: a rotation made by
                                  * another instance is seen within 30 s, and the new active key
                                  * was published as "next" a whole period before */
#define AUTH_TENANT_FLIGHTS 16 /* tenant loads in flight per shard: the requests for a tenant
                                * being loaded wait on its one load (or take the stale set);
                                * past it a request loads on its own */
#define AUTH_TENANT_KEYLESS_TTL_MS 1000 /* a tenant without a signing key is asked again sooner:
                                         * its first key (the rotator's or an admin's) is
                                         * usable within a second */

/* One tenant's keys as a shard holds them. Reference-counted on the shard's thread only: a
 * request signing on the worker pool holds a reference, so a reload never frees a key in use. */
/* A tenant's own rate limits (settings.rate_limit: client_per_s, address_per_s, burst_s,
 * account_per_min, account_burst, recipient_per_hour, recipient_burst); a member left out
 * keeps the server's default (TESSERA_RATE_*, AUTH_RATE_ACCOUNT_*, AUTH_RATE_RECIPIENT_*). */
struct auth_rate_policy {
    int64_t client_per_s;  /* -1: the default */
    int64_t address_per_s;
    int64_t burst_s;
    int64_t account_per_min;
    int64_t account_burst;
    int64_t recipient_per_hour;
    int64_t recipient_burst;
};

struct auth_tenant {
    unsigned refs;
    uint64_t loaded_ms;
    struct auth_rate_policy rate;
    char slug[AUTH_SLUG_MAX + 1];
    char id[CT_UUID_TEXT_LEN + 1];
    struct keyset keys;
};

/* The verified-token cache (auth/vcache.c). */
#define AUTH_VCACHE_SLOTS 32768       /* per shard: about 18 MiB, touched as it fills; a pool
                                       * of 10,000 live tokens per shard stays (almost) whole */
#define AUTH_VCACHE_WAYS 4            /* a set's entries: colliding tokens do not evict each other */
#define AUTH_VCACHE_SECRET_BYTES 192  /* XXH3's secret (at least XXH3_SECRET_SIZE_MIN, 136) */

/* The revocation set's keys of a token (auth_revoked_key): its jti, its client and, for a
 * user's token, its session and its subject (0: none; the last is looked up among the
 * not-befores). Made once when the token is verified, so a cached check does no hashing of
 * its own. */
#define AUTH_REVOKE_KEYS 4
#define AUTH_REVOKE_KEY_SUB 3
struct jwt_claims;
void auth_revoke_keys(const struct jwt_claims *c, uint64_t keys[AUTH_REVOKE_KEYS]);

/* What a gateway check needs of a verified token; sized for Tessera's own tokens (UUIDs),
 * a longer claim is simply not cached. */
struct auth_vclaims {
    uint64_t revoke_keys[AUTH_REVOKE_KEYS];
    char sub[129];
    char client_id[129];
    char tid[CT_UUID_TEXT_LEN + 1];
    char jti[65];
    char sid[CT_UUID_TEXT_LEN + 1]; /* "" when the token has none (client_credentials) */
    char scope[257];
    int64_t exp;
    int64_t iat;
    int64_t nbf;
};

struct auth_vcache;
struct auth_vcache *auth_vcache_create(void);
void auth_vcache_destroy(struct auth_vcache *cache);
/* The claims of token if it was verified for tenant slug and has not expired, or NULL. */
const struct auth_vclaims *auth_vcache_get(struct auth_vcache *cache, const char *slug, struct slice token,
                                           int64_t now);
/* keys: auth_revoke_keys' of the claims. */
void auth_vcache_put(struct auth_vcache *cache, const char *slug, struct slice token,
                     const struct jwt_claims *claims, const uint64_t keys[AUTH_REVOKE_KEYS]);

/* OAuth clients (auth/client.c). */
#define AUTH_CLIENT_ID_MAX 128        /* the schema's bound on clients.client_id */
#define AUTH_CLIENT_SECRET_MAX 256    /* generated secrets are 43 characters */
#define AUTH_CLIENT_SLOTS 1024        /* authenticated clients cached per shard */
#define AUTH_CLIENT_TTL_MS 10000      /* a deleted client or a changed secret is seen within
                                       * 10 s by introspection, revocation and the refresh grant
                                       * (whose rotation refuses a deleted client at once) */
#define AUTH_CLIENT_STALE_MS 3600000  /* while Postgres is away, a result this recent still
                                       * authenticates (stale if error, SECURITY F01) */

struct auth_client_cache;
struct auth_client_cache *auth_client_cache_create(void);
void auth_client_cache_destroy(struct auth_client_cache *cache);

/* The revocation set (auth/revoked.c). */
#define AUTH_REVOKED_MAX (4u << 20)   /* DESIGN §6: 4M entries per shard */
#define AUTH_REVOKED_POLL_MS 1000     /* catch-up from Postgres at least this often */
#define AUTH_EVENT_REVOKED STORE_EVENT_REVOKED /* a revocation with this seq committed */
#define AUTH_MSG_REVOKED 0x41550001u  /* ring message: a = key, b = auth_revoked_pack's word
                                       * (the local fan-out) */
#define AUTH_MSG_NOT_BEFORE 0x41550004u /* ring message: a = key, b = auth_revoked_pack_not_before's */
/* The fan-out's ring hop as the receiving shard measures it (/metrics:
 * tessera_revocation_fanout_seconds): bucket upper bounds in µs. */
#define AUTH_FANOUT_BUCKETS 10
#define AUTH_FANOUT_BOUNDS_US { 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000 }

struct auth_revoked;
struct auth_revoked *auth_revoked_create(struct auth *auth);
void auth_revoked_destroy(struct auth_revoked *r);
void auth_revoked_start(struct auth_revoked *r, struct loop *loop);
void auth_revoked_stop(struct auth_revoked *r);
/* True once the shard's first catch-up completed (the caches are warm before ready). */
bool auth_revoked_ready(const struct auth_revoked *r);
/* The key of a revoked (tenant id, kind, value): kind "jti", "sid", "sub" or "client". */
uint64_t auth_revoked_key(const char *tenant_id, const char *kind, const char *value);
bool auth_revoked_has(const struct auth_revoked *r, uint64_t key, int64_t now);
void auth_revoked_add(struct auth_revoked *r, uint64_t key, int64_t exp);
/* A subject's not-before (a 'sub' revocation: logout everywhere, a disabled or deleted user,
 * a password reset): its tokens issued before nb (iat < nb, Keycloak's rule) are refused
 * until `until`, the last exp such a token can carry. */
void auth_revoked_add_not_before(struct auth_revoked *r, uint64_t key, int64_t nb, int64_t until);
bool auth_revoked_before(const struct auth_revoked *r, uint64_t key, int64_t iat, int64_t now);
/* For a cache of answers read from Postgres (auth/apikey.c). The epoch grows with every
 * not-before applied on r's shard: an answer asked before it moved may predate one, and is not
 * cached. A subject's stamp is the epoch its not-before was last applied at (0: none), so an
 * answer cached at epoch E is stale once its subject's stamp passes E, even when the new
 * not-before has the old one's value (both whole seconds). */
uint64_t auth_revoked_not_before_epoch(const struct auth_revoked *r);
uint64_t auth_revoked_not_before_stamp(const struct auth_revoked *r, uint64_t key, int64_t now);
/* AUTH_MSG_NOT_BEFORE's b: nb and until in one word (not timed: the metric is per kind). */
uint64_t auth_revoked_pack_not_before(int64_t nb, int64_t until);
void auth_revoked_unpack_not_before(uint64_t packed, int64_t *nb, int64_t *until);
/* The fan-out message's b: the revoked token's exp and the sending moment, so the receiver
 * can time the hop without a wider ring message. */
uint64_t auth_revoked_pack(int64_t exp);
/* The exp of a packed word, and the µs since it was packed (recorded on r's shard). */
int64_t auth_revoked_unpack(uint64_t packed, uint64_t *hop_us);
/* An event said revocation seq committed somewhere: catch up if it is news. */
void auth_revoked_heard(struct auth_revoked *r, int64_t seq);
struct auth_wait;
/* A revocation committed with seq (auth/revoke.c): applied on this shard, sent to every
 * local shard, published for the other instances (DESIGN §1's protocol, steps 2 and 3). */
void auth_revoke_spread(struct auth_wait *w, uint64_t key, int64_t exp, int64_t seq);
/* The same for a 'sub' revocation (auth_revoked_add_not_before). */
void auth_revoke_spread_not_before(struct auth_wait *w, uint64_t key, int64_t nb, int64_t until, int64_t seq);

/* ---- Batched audit events (auth/audit_batch.c) ---- */

#define AUTH_AUDIT_BATCH_ROWS 128   /* events per INSERT: one statement's worth of rows that
                                     * Postgres writes in about a millisecond */
#define AUTH_AUDIT_PENDING_MAX 4096 /* events a shard keeps while Postgres is away or slow (4 MiB,
                                     * touched as it fills); past it they are dropped and counted */
#define AUTH_AUDIT_DETAILS_MAX 511  /* an event's details: a small JSON object */

/* What a caller says of an event; ip, request id and time come from the parked request. */
struct auth_audit_fields {
    const char *actor_kind, *actor_id, *action, *target_kind, *target_id;
    const char *details; /* a JSON object, or NULL */
};
struct auth_audit_batch;
struct auth_audit_batch *auth_audit_batch_create(struct auth *auth);
void auth_audit_batch_destroy(struct auth_audit_batch *b);
void auth_audit_batch_start(struct auth_audit_batch *b, struct loop *loop);
/* Counts what it could not write as dropped; nothing is sent after it. */
void auth_audit_batch_stop(struct auth_audit_batch *b);
/* Events queued or being written (a scrape may read it from any shard). */
size_t auth_audit_batch_pending(const struct auth_audit_batch *b);
/* Queues an event of the parked request w, for tenant slug. Never fails the request: an
 * event that cannot be kept is counted as dropped. */
struct auth_wait;
void auth_audit_note(struct auth_wait *w, const char *slug, const struct auth_audit_fields *f);
/* A client_credentials token issued to client_id (its jti). A user's token is not: its
 * session's row records it (created at login, last_seen_at at each rotation), and a refresh
 * stays one statement, which issue 6's refresh goal measures. */
void auth_audit_token_issued(struct auth_wait *w, const char *slug, const char *client_id, const char *jti,
                             const char *scope);
/* A client that failed to authenticate (unknown, wrong secret, a confidential one calling
 * as public) at the parked request's endpoint; client_id as presented. */
void auth_audit_client_failed(struct auth_wait *w, const char *slug, const char *client_id);

/* ---- Refused logins' failures, committed after their answer (auth/login_failure.c) ---- */

/* Lockout (SECURITY P03/P04), simpler than Keycloak's: from AUTH_LOCKOUT_THRESHOLD consecutive
 * failures on, each failure locks the account for a wait that starts at
 * AUTH_LOCKOUT_FIRST_WAIT_S and doubles up to AUTH_LOCKOUT_MAX_WAIT_S; a try during the wait is
 * refused like a wrong password and does not lengthen it; the count restarts after
 * AUTH_LOCKOUT_RESET_S without failures or at a success. Never permanent: the victim of a spray
 * gets in at most AUTH_LOCKOUT_MAX_WAIT_S after it stops. */
#define AUTH_LOCKOUT_THRESHOLD 10     /* NIST SP 800-63B §5.2.2 allows up to 100; 10 keeps an
                                       * online guesser slow while a typo-prone user is safe */
#define AUTH_LOCKOUT_FIRST_WAIT_S 2   /* the first wait: short, so a mistaken lock hurts little */
#define AUTH_LOCKOUT_MAX_WAIT_S 900   /* Keycloak's maximum wait (15 min): a spray locks out for
                                       * at most this long (P04) */
#define AUTH_LOCKOUT_RESET_S 43200    /* Keycloak's failure reset time (12 h) */
#define AUTH_LOGIN_FAILURES_MAX 256   /* refused logins a shard may have in Postgres at once: a
                                       * shard's share of the hash pool finishes far fewer per
                                       * statement round trip; past it the refusal is 503 */

/* What a refused login records: its user's id, NULL for an unknown or disabled name. */
struct auth_login_refusal {
    const char *tenant_id, *user_id, *ip, *request_id; /* ip "" : none */
};
struct auth_login_failures;
struct auth_login_failures *auth_login_failures_create(struct auth *auth);
void auth_login_failures_destroy(struct auth_login_failures *t);
void auth_login_failures_start(struct auth_login_failures *t, struct loop *loop);
void auth_login_failures_stop(struct auth_login_failures *t);
/* Statements in flight (a scrape may read it from any shard). */
size_t auth_login_failures_pending(const struct auth_login_failures *t);
/* A refusal is kept (copied into one of loop's shard's slots), answered, then sent: its answer
 * leaves before the statement, so nothing the statement sets off (Postgres woken on this
 * core) comes before it. Keep is NULL when every slot is taken or the store would refuse the
 * statement (503: the refusal is not given, so no guess goes uncounted). */
struct auth_login_failure;
struct auth_login_failure *auth_login_failure_keep(struct auth *auth, struct loop *loop,
                                                  const struct auth_login_refusal *refusal);
/* Sends a kept refusal's STORE_LOGIN_FAILED, owned by the shard from here on. */
void auth_login_failure_send(struct auth_login_failure *f);

/* Counters written by their shard only (relaxed stores), read by a scrape on any shard. */
struct auth_shard_stats {
    uint64_t fanout[AUTH_FANOUT_BUCKETS + 1]; /* the last: over the largest bound */
    uint64_t fanout_sum_us;
    uint64_t tenant_loads; /* reads of a tenant's keys started (one per tenant in flight) */
    uint64_t client_loads; /* reads of a client's row started (one per client in flight for the
                            * requests that may take a cached answer) */
    uint64_t session_rotations; /* rotations this shard ran as their session's owner */
    uint64_t session_forwarded; /* rotations this shard sent to their session's owner */
    uint64_t session_waits;     /* rotations that waited on this owner behind one of their session */
    uint64_t audit_written;     /* batched audit events committed */
    uint64_t audit_dropped;     /* batched audit events lost (queue full, refused, shard stopped) */
    uint64_t audit_batches;     /* their INSERTs committed */
    uint64_t login_failures_recorded; /* refused logins' failure statements committed */
    uint64_t login_failures_lost;     /* ... that failed: the count and audit row are lost */
};
/* Owner-only increment, a relaxed store so a scrape's relaxed load is race-free. */
void auth_stat_add(uint64_t *counter, uint64_t n);

struct auth_wait;
struct auth_tenant;
typedef void (*auth_tenant_ready_fn)(struct auth_wait *w, struct auth_tenant *tenant);

/* Answers to other shards' asks that a full ring refused: sent again on a timer, never
 * dropped (the asker's parked request waits for each). Bounded by construction: a shard has at
 * most AUTH_RATE_ASKS_MAX + AUTH_SESSION_ASKS_MAX asks out, so at most that many per asking
 * shard wait here. */
#define AUTH_REPLY_RETRY_MS 1 /* an answer a full ring refused is sent again this soon */
struct auth_replies {
    struct loop *loop;
    struct auth_reply {
        unsigned to;
        struct ring_msg msg;
    } *pending;
    size_t count, cap;
    struct loop_timer resend;
};
/* Sends an answer to shard `to`, now or, when its ring is full, on the resend timer. */
void auth_reply(struct auth_replies *replies, unsigned to, const struct ring_msg *msg);

struct auth_shard {
    struct auth_shard_stats stats;
    struct auth_replies replies;
    struct auth_rate *rate;
    unsigned rate_asks; /* asks out to other shards' buckets */
    struct auth_session_owner *sessions; /* this shard's sessions with a rotation running */
    unsigned session_asks;               /* rotations out to other shards' sessions */
    struct auth_revoked *revoked;
    struct auth_vcache *verified;
    struct auth_key_cache *api_keys;     /* answers about API keys (auth/apikey.c) */
    struct auth_key_uses *key_uses;      /* their last-use stamps waiting (auth/apikey_uses.c) */
    struct auth_client_cache *clients;
    struct auth_audit_batch *audit;      /* events waiting for their batched INSERT */
    struct auth_login_failures *login_failures; /* refused logins' statements in flight */
    struct auth_tenant *tenants[AUTH_TENANT_SLOTS];
    struct auth_tenant_flight {
        char slug[AUTH_SLUG_MAX + 1];  /* "" : free */
        auth_tenant_ready_fn leader_ready;
        struct auth_wait *waiters;
    } flights[AUTH_TENANT_FLIGHTS];
};

struct auth {
    const struct config *cfg;
    struct store *store;
    struct workers *workers;
    struct password_policy passwords;
    bool has_master;               /* TESSERA_MASTER_KEY_FILE was given and read */
    struct seal_key master;        /* opens the sealed private signing keys */
    struct keys_rotator *rotator;  /* scheduled key rotation (store/keys.h), or NULL */
    struct outbox_sender *outbox;  /* the email outbox sender (auth/outbox.h), or NULL */
    struct auth_shard *shards[CONFIG_SHARDS_MAX];
};

/* Rate limits (auth/ratelimit.c). */
#define AUTH_RATE_SLOTS 65536        /* buckets per shard (two candidate slots per key) */
#define AUTH_RATE_ASKS_MAX 1024      /* asks a shard may have out to owners at once: past it 503 */
#define AUTH_RATE_BUCKETS 4          /* per source address, per client, per account (login), per
                                      * mail recipient (sign-up, reset, verification) */
#define AUTH_RATE_CLIENT 1           /* the index of the per-client bucket */
#define AUTH_RATE_ACCOUNT 2          /* the index of the per-account bucket (SECURITY P05) */
#define AUTH_RATE_RECIPIENT 3        /* the index of the per-recipient bucket */
/* SECURITY P05, the per-account login bucket keyed on the normalised submitted name: one
 * try per 2 s (TESSERA_RATE_ACCOUNT_PER_MIN, default 30 a minute, core/config.c) with a
 * burst of 10. A person retyping a password never waits; 10,000 guesses at one account take
 * 5.5 hours however many addresses send them, where NIST SP 800-63B §5.2.2 asks that online
 * guessing be limited per account; the refusal is 429 + Retry-After (RFC 6585 §4). A
 * tenant's settings.rate_limit {account_per_min, account_burst} overrides them. */
#define AUTH_RATE_ACCOUNT_BURST 10
#define AUTH_RATE_ACCOUNT_WINDOW_S 60 /* account_per_min counts over a minute */
/* Mail floods: the endpoints that send mail to a submitted address (sign-up with an email,
 * /password/forgot, /email/verify/request) take a bucket keyed on the address, whether or not
 * an account has it (so its 429 tells nothing, as P05's): 4 mails at once (GCRA: one plus
 * the burst), then 5 an hour (TESSERA_RATE_RECIPIENT_PER_HOUR). The source address's bucket alone let anyone with many
 * addresses fill a victim's inbox with reset links. */
#define AUTH_RATE_RECIPIENT_BURST 3
#define AUTH_RATE_RECIPIENT_WINDOW_S 3600 /* recipient_per_hour counts over an hour */
#define AUTH_MSG_RATE_ASK 0x41550002u    /* a = key, b = interval_us << 32 | burst, ptr = the
                                          * waiting request */
#define AUTH_MSG_RATE_ANSWER 0x41550003u /* a = retry-after in us (0: allowed), b = key, ptr as asked */

/* One request's buckets: prepared, then decided where owned, then asked elsewhere. */
struct auth_rate_check {
    uint64_t keys[AUTH_RATE_BUCKETS];
    uint32_t per_s[AUTH_RATE_BUCKETS]; /* the quota per second (per AUTH_RATE_ACCOUNT_WINDOW_S
                                        * for the account); 0: that limit is off */
    uint32_t burst[AUTH_RATE_BUCKETS];
    bool remote[AUTH_RATE_BUCKETS];
    bool later;                        /* the tenant's limits are not known on this shard yet */
    int denied;                        /* the bucket that said no */
    uint64_t retry_us;
    char slug[AUTH_SLUG_MAX + 1];
};

/* A request parked on one Postgres statement: the first member of a handler's state. */
struct auth_wait {
    struct pg_query q;
    struct auth *auth;
    struct loop *loop;
    enum pg_outcome outcome;
    const struct pg_result *result; /* valid while the answer is written */
    http_resume_fn respond;
    void (*next)(struct auth_wait *w); /* a later stage instead of the answer, or NULL */
    int status;                     /* auth_answer's problem */
    const char *detail;
    const char *oauth_error;        /* auth_oauth_fail's RFC 6749 §5.2 error code, or NULL */
    void (*tenant_ready)(struct auth_wait *w, struct auth_tenant *tenant); /* auth_tenant_get's */
    struct auth_wait *tenant_next;  /* the next request waiting on the same tenant load */
    unsigned tenant_flight;         /* 1 + the index of the load this request leads; 0: none */
    struct auth_client_wait *client_wait; /* auth_client_authenticate's */
    struct auth_rate_check rate;          /* auth_rate_remote's */
    unsigned rate_pending;
    bool rate_failed;
    void (*rate_next)(struct auth_wait *w);
};

struct auth_rate;
struct auth_rate *auth_rate_create(void);
void auth_rate_destroy(struct auth_rate *rate);
uint64_t auth_rate_key(const char *tenant, const char *kind, const char *value);
unsigned auth_rate_owner(const struct auth *auth, uint64_t key);
/* GCRA on this shard's bucket: 0 (allowed, counted) or the microseconds to wait. */
uint64_t auth_rate_take(struct auth_rate *rate, uint64_t key, uint32_t per_s, uint32_t burst);
/* On the owner: the answer to another shard's ask (sent back with auth_reply). */
struct ring_msg auth_rate_on_ask(struct auth_rate *rate, const struct ring_msg *ask);
int auth_rate_ask(struct auth_wait *w, uint64_t key, uint32_t interval_us, uint32_t burst);
/* What a request's buckets are keyed on: "" skips one. */
struct auth_rate_subjects {
    const char *peer_ip;
    const char *client_id;
    const uint8_t *client_secret_sha256; /* the presented secret's digest, or NULL: the client's
                                          * bucket is keyed on both (see auth_rate_admit) */
    const char *account;   /* the normalised submitted username or email at login */
    const char *recipient; /* the submitted address a mail would go to, lower case */
};
/* The buckets of a request to tenant slug, with the tenant's own limits when the shard holds
 * them (policy may be NULL). */
void auth_rate_prepare(const struct auth *auth, const char *slug, const struct auth_rate_policy *policy,
                       const struct auth_rate_subjects *subjects, struct auth_rate_check *chk);
/* Reads settings.rate_limit (JSON text); members missing or malformed keep the default. */
void auth_rate_policy_parse(const char *json, struct auth_rate_policy *out);
/* Decides the buckets this shard owns (false: denied, chk says which and for how long) and
 * marks the others remote. */
bool auth_rate_local(const struct auth *auth, const struct loop *loop, struct auth_rate_check *chk);
bool auth_rate_has_remote(const struct auth_rate_check *chk);
/* True when the decision is not complete here: owners to ask, or the tenant to load first. */
bool auth_rate_pending(const struct auth_rate_check *chk);
/* For a parked request whose w->rate is pending: loads the tenant when needed, decides, asks
 * the owners; next(w) runs when every bucket allowed, else the request is answered (429,
 * 503). 0 when that is under way (or already answered through ctx); -TE_FULL: the caller
 * answers 503 itself. */
int auth_rate_continue(struct http_ctx *ctx, struct auth_wait *w, void (*next)(struct auth_wait *w));
/* A handler's first step (the tenant is ctx->params[0], already checked): prepares the
 * buckets and decides those this shard owns. False: answered 429. When the shard does not
 * hold the tenant (its limits), nothing is decided yet: auth_rate_pending says so. The
 * client's bucket is keyed on the client and the presented secret's digest (secret_sha256,
 * or NULL for a request without one): a stranger presenting wrong secrets for a client_id
 * fills a bucket of their own, held by their address's bucket, and never the client's. */
bool auth_rate_admit(struct http_ctx *ctx, const struct auth *auth, const char *client_id,
                     const uint8_t *secret_sha256, struct auth_rate_check *limits);
/* The same with the per-account bucket of a login (SECURITY P05): account is the normalised
 * submitted name, whether or not such an account exists; the 429 is the same either way.
 * secret_sha256 as auth_rate_admit's: the password grant's presented client secret, NULL for
 * a public client and the JSON login (which have none to key on). */
bool auth_rate_admit_account(struct http_ctx *ctx, const struct auth *auth, const char *client_id,
                             const uint8_t *secret_sha256, const char *account, struct auth_rate_check *limits);
/* The same with the per-recipient bucket of an endpoint that mails address (any case), if
 * it is not empty. */
bool auth_rate_admit_recipient(struct http_ctx *ctx, const struct auth *auth, const char *address,
                               struct auth_rate_check *limits);
/* 429 with Retry-After, RateLimit-Policy and RateLimit for a denied check. */
void auth_rate_respond(struct http_ctx *ctx, const struct auth_rate_check *chk);
/* For a parked request whose w->rate has remote buckets: asks their owners; next(w) runs
 * when every one allowed, else the request is answered 429 (or 503 when an owner could
 * not be asked). -TE_FULL when no owner could be asked: the caller answers 503 itself. */
int auth_rate_remote(struct auth_wait *w, void (*next)(struct auth_wait *w));
/* An owner's answer reached the asking shard. */
void auth_rate_answered(struct auth_wait *w, const struct ring_msg *answer);
/* The request's id (X-Request-Id, or the one made for it) for audit rows, NUL-terminated in
 * dst (cap bytes; HTTP_REQUEST_ID_BYTES_MAX + 1 holds any). */
void auth_request_id(const struct http_ctx *ctx, char *dst, size_t cap);

/* ---- JSON request bodies (auth/input.c) ---- */

#define AUTH_USERNAME_MAX 128 /* bytes; the schema allows 128 characters */
#define AUTH_EMAIL_MAX 320    /* RFC 5321 §4.5.3.1: 64 + 1 + 255 */
struct jscan_object;
/* Content-Type is application/json (parameters allowed). */
bool auth_json_body(const struct http_ctx *ctx);
/* ,"name":"value" (value escaped) after an object's first member; name is a literal. */
void auth_json_member(struct buf *b, const char *name, struct slice value);
void auth_json_text(struct buf *b, const char *name, const char *value);
/* A body of its own media type (parsed into obj): the reason it is refused, or NULL. */
const char *auth_json_object(const struct http_ctx *ctx, struct jscan_object *obj);
/* The start of a JSON endpoint under /t/{tenant} (params[0], route_arg the auth): the slug
 * and the media type checked (404, 415), then auth_park's state (NULL: answered). */
void *auth_json_request(struct http_ctx *ctx, size_t bytes);
/* A string member into dst (max bytes); "" when absent (*seen false; seen may be NULL).
 * The reason it is refused (not a string, too long, a NUL inside), or NULL. */
const char *auth_json_string(const struct jscan_object *obj, const char *name, char *dst, size_t max, size_t *len,
                             bool *seen);
/* A username being set (sign-up, PATCH /me) into its one stored form (core/precis.h
 * precis_username: RFC 8265 §3.3 UsernameCaseMapped; spaces, surrounding ones too, refused
 * as before), in place in name (AUTH_USERNAME_MAX + 1 bytes), *len updated: the reason it is
 * refused (SECURITY P06), or NULL. */
const char *auth_username_normalise(char *name, size_t *len);
/* No control character (C0 or DEL) among s's len bytes. */
bool auth_printable(const char *s, size_t len);
/* One address: local@domain, printable, no space, at most AUTH_EMAIL_MAX bytes. */
bool auth_email_valid(const char *email, size_t len);
#define AUTH_PASSWORD_MIN 8 /* NIST SP 800-63B §5.1.1.2: at least 8 characters */
/* A password being set (sign-up, reset, change): normalised in place (pw: PASSWORD_INPUT_MAX
 * + 1 bytes; core/precis.h precis_password, RFC 8265 §4.2 OpaqueString, SECURITY P07), then
 * checked. Why it is refused (invalid UTF-8, a control character, too long once normalised,
 * too short, on the common list), or NULL when it may be used. Never at login. */
const char *auth_new_password_refused(char *pw, size_t *len);
/* On a worker thread: pw as submitted against stored (NULL: the dummy, and a mismatch), as
 * password_verify answers. An imported bcrypt hash ($2a$, $2b$, $2y$) was made from the raw
 * bytes another system was given, so it is verified with the bytes as submitted and with
 * nothing else; every other hash with pw normalised as when it was set (SECURITY P07), and
 * a password that cannot be normalised (invalid UTF-8, a control character) is refused
 * like a wrong one, after the same work (the dummy hash, P01). */
int auth_password_verify(const struct password_policy *policy, const char *stored, const char *pw,
                         size_t len);
/* On a worker thread: the Argon2id hash of pw normalised (a rehash after a login), as
 * password_hash answers; -TE_INVAL when pw cannot be normalised. */
int auth_password_rehash(const struct password_policy *policy, const char *pw, size_t len,
                         char *out, size_t cap);

/* ---- Access tokens (auth/access.c) ---- */

#define AUTH_ACCESS_TOKEN_MAX 6144 /* longer is refused: Tessera's own tokens stay under 4 KiB
                                    * (auth/token.c), and a parked check keeps a copy */

/* Whether token is a valid access token of tenant slug: 0 and *out (valid until the next
 * call on this thread), -TE_INVAL, or -TE_EMPTY when tenant is NULL and the shard has no
 * fresh copy of the tenant's keys (load them with auth_tenant_get, then call again). */
int auth_access_check(const struct auth *auth, const struct loop *loop, const char *slug,
                      const struct auth_tenant *tenant, struct slice token, const struct jwt_claims **out);

/* ---- OAuth forms and client authentication (auth/client.c) ---- */

/* One known parameter of an application/x-www-form-urlencoded body. */
struct auth_form_field {
    const char *name;
    char *dst;     /* decoded, NUL-terminated; "" when absent */
    size_t cap;
    bool seen;
};
/* Content-Type is application/x-www-form-urlencoded (parameters allowed). */
bool auth_form_body(const struct http_ctx *ctx);
/* RFC 6749 §3.3: scope = scope-token *( SP scope-token ), scope-token = 1*NQCHAR. */
bool auth_scope_valid(const char *scope);
/* Checks the Content-Type and reads the known parameters (others are ignored, RFC 6749
 * §3.2). The reason the body is refused (a repeated, malformed or too long parameter), or
 * NULL. */
const char *auth_form_parse(const struct http_ctx *ctx, struct auth_form_field *fields, size_t n);
/* The same from in, a form body or a query string, whatever the Content-Type. */
const char *auth_form_read(struct slice in, struct auth_form_field *fields, size_t n);

/* A client's credentials as presented: the form's client_id / client_secret first (has_*
 * set by the caller from the form), then auth_client_credentials folds in Basic. */
struct auth_client_creds {
    char client_id[AUTH_CLIENT_ID_MAX + 1];
    char secret[AUTH_CLIENT_SECRET_MAX + 1];
    bool has_id, has_secret;
};
/* Exactly one method (RFC 6749 §2.3): 0, or the status to answer (400 invalid_request, 401
 * invalid_client) with *why. */
int auth_client_credentials(const struct http_ctx *ctx, struct auth_client_creds *creds, const char **why);

/* An authenticated client: valid during the ready callback only (copy what is kept). */
struct auth_client {
    char client_id[AUTH_CLIENT_ID_MAX + 1];
    char tenant_id[CT_UUID_TEXT_LEN + 1];
    char grants[128];   /* space-separated */
    char scopes[1024];  /* space-separated */
    int64_t lifetime_s;
    bool can_introspect;
};
typedef void (*auth_client_ready_fn)(struct auth_wait *w, const struct auth_client *client);
/* Part of a handler's parked state: who is asking, at which tenant. */
struct auth_client_wait {
    char slug[AUTH_SLUG_MAX + 1];
    char client_id[AUTH_CLIENT_ID_MAX + 1];
    uint8_t secret_sha256[32];
    bool cached;             /* auth_client_authenticate's: a cached result may answer */
    auth_client_ready_fn ready;
    struct auth_wait *next_waiter; /* the next request waiting for the same read */
};
/* Authenticates cw's client for a parked request: ready(w, client), or ready(w, NULL) with
 * w->status 401 (unknown client, wrong secret, public client) or 503/500 and w->detail.
 * cached: a fresh per-shard result may answer without a query, and a stale one while
 * Postgres is away (introspection); without it (token, revocation: a deleted client or a
 * changed secret must stop them at once) the row is read. ctx as auth_tenant_get. */
void auth_client_authenticate(struct http_ctx *ctx, struct auth_wait *w, struct auth_client_wait *cw,
                              bool cached, auth_client_ready_fn ready);
/* The shard's fresh cached result for cw's credentials, or NULL (then authenticate). */
const struct auth_client *auth_client_cached(const struct auth *auth, const struct loop *loop,
                                             const struct auth_client_wait *cw);
/* src into dst (cap bytes with the NUL); false, dst untouched, when it does not fit. */
bool auth_text_copy(char *dst, size_t cap, const char *src);
/* True when every space-separated word of want is one of have's ("" is a subset). */
bool auth_words_subset(const char *want, const char *have);

/* The shard's stores for a request. */
struct store_shard *auth_store(const struct auth *auth, const struct loop *loop);

/* True when slug can name a tenant; anything else is 404 before any query (SECURITY T06:
 * "/t/ACME", "/t/acme%2F..", "/t/acme%00" never reach another tenant). */
bool auth_slug_valid(struct slice slug);
/* Copies a checked slug, NUL-terminated, into dst (AUTH_SLUG_MAX + 1 bytes). */
void auth_slug_copy(struct slice slug, char *dst);

/* Parks ctx with `bytes` of state that begins with a struct auth_wait. NULL: the
 * answer (503) was given. */
void *auth_park(struct http_ctx *ctx, struct auth *auth, size_t bytes);
/* Sends stmt for a parked request (w->q's params set). Its outcome and result reach
 * next(w) when next is given (a later stage, which ends with another auth_send or an
 * answer), else respond(ctx, w) with w->outcome and w->result. A refused send reaches
 * next (w->outcome set, no result), even from the handler (http_resume then answers when
 * the handler returns); without next it answers 503, at once from the handler (ctx given),
 * else through respond's path (w is gone). True when sent. */
bool auth_send(struct http_ctx *ctx, struct auth_wait *w, enum store_stmt stmt,
               http_resume_fn respond, void (*next)(struct auth_wait *w));
/* Ends a parked request with a problem answer (503 gets Retry-After). */
void auth_answer(struct auth_wait *w, int status, const char *detail);
/* The same from the handler itself (the park is undone). */
void auth_answer_now(struct http_ctx *ctx, int status, const char *detail);
/* Answers for a parked request's respond step (http_resume_fn), or called from a handler:
 * 401 with WWW-Authenticate Bearer error="invalid_token" (RFC 6750 §3.1), and 204 with
 * Cache-Control no-store. */
void auth_respond_invalid_token(struct http_ctx *ctx, void *state);
void auth_respond_no_content(struct http_ctx *ctx, void *state);
/* Answers a store failure (RFC 9457): 409 on a unique violation, 503 + Retry-After when
 * Postgres is down, busy or slow, 500 otherwise. */
void auth_respond_store_failure(struct http_ctx *ctx, enum pg_outcome outcome);
/* A user's list (sessions, API keys) as {"<member>": the JSON array Postgres made}, with
 * no-store; no row: 404, no such user. */
void auth_respond_user_list(struct http_ctx *ctx, const struct auth_wait *w, const char *member);
/* A user's API keys (STORE_APIKEYS_OF_USER's row), as auth_respond_user_list: GET /me/api-keys and
 * the admin's GET /users/{id}/api-keys. */
void auth_respond_api_keys(struct http_ctx *ctx, void *state);
/* Ends a parked request with a store failure answer (from a stage after the handler). */
void auth_fail(struct auth_wait *w, enum pg_outcome outcome);

/* A token endpoint's success (RFC 6749 §5.1): {access_token, token_type Bearer, expires_in,
 * scope, refresh_token, id_token}, the last three only when given, with no-store. */
struct auth_token_answer {
    struct slice access;
    int64_t lifetime_s;
    const char *scope;     /* NULL or "": not sent */
    const char *refresh;   /* NULL: not sent */
    struct slice id_token; /* empty: not sent */
};
void auth_token_respond(struct http_ctx *ctx, const struct auth_token_answer *a);
/* OAuth endpoints' errors (RFC 6749 §5.2): {"error", "error_description"} with no-store;
 * invalid_client is 401 with WWW-Authenticate (§5.2: the client may have used Basic). */
void auth_oauth_error(struct http_ctx *ctx, int status, const char *error, const char *description);
/* The same, ending a parked request. */
void auth_oauth_fail(struct auth_wait *w, int status, const char *error, const char *description);
/* A client authentication that failed (auth_client_authenticate gave NULL), answered: 401
 * invalid_client (RFC 6749 §5.2) or the status it had (503 when the store was away). */
void auth_client_refused(struct auth_wait *w);

/* A tenant's keys for a parked request: from the shard's cache, or loaded (Postgres, then
 * the sealed private parts opened on the worker pool). ready(w, tenant) runs once, with a
 * reference the caller gives back with auth_tenant_put, or with NULL and w->status /
 * w->detail saying why (404 unknown tenant, 503 store or pool unavailable, 500). From a
 * handler, ctx is its context: a load the store refuses at once is answered 503 there and
 * ready never runs; from a later stage ctx is NULL. slug must outlive the wait. */
void auth_tenant_get(struct http_ctx *ctx, struct auth_wait *w, const char *slug,
                     auth_tenant_ready_fn ready);
/* The shard's fresh copy of a tenant's keys, or NULL (not cached, or due for a reload):
 * the hot path's lookup, no reference taken (use it before returning to the loop). */
const struct auth_tenant *auth_tenant_cached(const struct auth *auth, const struct loop *loop,
                                             const char *slug);
void auth_tenant_put(struct auth *auth, struct loop *loop, struct auth_tenant *tenant);
/* For a stage that signs: true when the tenant's keys hold a signing key; else the reference
 * is given back, the fault logged, and w->status / w->detail say 503 (retry: a key is made
 * or unsealed meanwhile). */
bool auth_tenant_signs(struct auth_wait *w, struct auth_tenant *tenant);

/* Runs a token-signing job for a parked request: on the shard itself (run, then done, now)
 * when the tenant signs with EdDSA or ES256, else on the worker pool's urgent lane. DESIGN §1
 * sends work over ~50 µs to the pool: an RSA-2048 signature costs 250-300 µs here, an Ed25519
 * or P-256 one 25-45 µs, about what the hand-off to a worker and back costs (perf/login's
 * refresh runs). 0, or -TE_FULL when the pool refused it (answer 503). */
int auth_sign_job(struct auth_wait *w, const struct auth_tenant *tenant, struct worker_job *job);
/* A password hash or check for w's request on the worker pool (workers_submit_by): not run
 * if it is still queued when the request's idle backstop has answered 503; then done sees
 * job->expired and must change nothing. 0, or -TE_FULL (the caller answers 503). */
int auth_submit_hash(struct auth_wait *w, struct worker_job *job);
#define AUTH_BUSY_DETAIL "the server is busy; retry later" /* 503's detail (with Retry-After) */
/* True when a hash job's outcome has nobody to go to: it was not run (expired), or its
 * request was answered by the backstop or its client left while it ran. Its done then
 * changes nothing (no session, no user, no new password) and only releases the request. */
bool auth_job_abandoned(const struct auth_wait *w, const struct worker_job *job);
/* The moment (loop_now_us) a parked request's idle backstop answers 503 if nothing has: its
 * park plus TESSERA_IDLE_TIMEOUT_MS. Work still waiting then has nobody to serve. */
uint64_t auth_backstop_us(const struct auth_wait *w);
/* Releases such a request: the answer is the backstop's (503, Retry-After, close), as its
 * wait reached the backstop's moment, or none when the backstop already answered. */
void auth_answer_abandoned(struct auth_wait *w);

/* The issuer of a tenant: TESSERA_PUBLIC_URL + "/t/" + slug. */
void auth_issuer(const struct auth *auth, struct slice slug, struct buf *out);

int auth_jwks_routes(struct auth *auth, struct http_server *http);
int auth_register_routes(struct auth *auth, struct http_server *http);
int auth_token_routes(struct auth *auth, struct http_server *http);
int auth_verify_routes(struct auth *auth, struct http_server *http);
int auth_introspect_routes(struct auth *auth, struct http_server *http);
int auth_revoke_routes(struct auth *auth, struct http_server *http);
int auth_discovery_routes(struct auth *auth, struct http_server *http);
int auth_login_routes(struct auth *auth, struct http_server *http);
int auth_logout_routes(struct auth *auth, struct http_server *http);

/* ---- Sessions and refresh tokens (auth/session.c) ---- */

#define AUTH_SESSION_IDLE_S (14 * 86400)     /* sliding expiry: a refresh token unused for 14
                                              * days dies (RFC 9700 §4.14.2) */
#define AUTH_SESSION_ABSOLUTE_S (30 * 86400) /* the cap no rotation extends: a stolen,
                                              * rotated family dies within 30 days anyway */
#define AUTH_REFRESH_SECRET_BYTES 32         /* DESIGN §4: 256 random bits */
/* "rt_" + session id + "." + 43 base64url characters. */
#define AUTH_REFRESH_TOKEN_LEN (3 + CT_UUID_TEXT_LEN + 1 + 43)
#define AUTH_SESSION_ISSUER_MAX (CONFIG_URL_BYTES_MAX + 3 + AUTH_SLUG_MAX)
#define AUTH_SESSION_JWT_MAX 4096 /* as auth/token.c: a full scope and an RSA-4096 signature */

/* The hex SHA-256 of text into sha_hex (2 * HASH_SHA256_BYTES + 1 bytes): the form a
 * high-entropy secret is stored and looked up in. */
void auth_sha256_hex(const char *text, char *sha_hex);
/* n bytes as 2n lowercase hex digits and a NUL. */
void auth_hex(const uint8_t *in, size_t n, char *out);
/* s is a UUID in RFC 9562 §4's text form, lowercase as Postgres and ct_uuid_format write it. */
bool auth_uuid_text(const char *s);

/* A new refresh token for session sid: the token (AUTH_REFRESH_TOKEN_LEN + 1 bytes) and the
 * hex SHA-256 that is stored (65 bytes). 0 or -TE_IO. */
int auth_refresh_make(const char *sid, char *token, char *sha_hex);
/* The session id of a presented refresh token and the hex SHA-256 of it; -TE_INVAL when it
 * is not of the form above. */
int auth_refresh_parse(const char *token, char *sid, char *sha_hex);
/* The checks of auth_refresh_parse alone (the form, the session id, a canonical secret), without
 * hashing: whether a token is a refresh token at all. */
bool auth_refresh_well_formed(struct slice token);

/* What a user's access token says (DESIGN §4, RFC 9068 §2.2): rendered and signed on a
 * worker thread by auth_session_sign. */
struct auth_user_token {
    const struct auth_tenant *tenant;
    const char *issuer, *sub, *client_id, *scope, *sid;
    int64_t lifetime_s;
};
/* Signs a new access token (jti and iat made here) into out; its length or -TE_xxx. */
int auth_session_sign(const struct auth_user_token *t, char *out, size_t cap);

#define AUTH_SESSION_REVOKE_SLACK_S 3600 /* a 'sid' revocation outlives the client's token
                                          * lifetime by an hour: a lifetime raised since a
                                          * token was issued, and clock leeway, stay covered */
/* Spreads every revocation of w->result (seq, tenant id, value, until and, when a fifth
 * column is there and not NULL, the not-before of a 'sub' revocation whose value is the
 * user id; else value is a session id: the session statements' columns; a row of NULLs is
 * skipped) by auth_revoke_spread(_not_before); how many. */
int auth_session_spread(struct auth_wait *w);
/* The same for rows of any one kind but 'sub' (an API key's 'key' revocation). */
int auth_revocations_spread(struct auth_wait *w, const char *kind);

/* Sessions' owner shards (auth/session_owner.c). A session belongs to shard xxh3(id) % N
 * (DESIGN §1: ownership by hash). Its rotations run there, one at a time within the instance:
 * a rotation asked while another of the same session runs waits for it (and then meets the
 * token already rotated: reuse), so two of an instance's statements never race on one
 * session's row; across instances the conditional UPDATE's row lock decides. A rotation
 * asked on another shard travels to the owner as a message carrying the op, which the owner
 * hands back with the verdict (the op's memory stays its sender's: ring.h). */
#define AUTH_SESSION_BUSY_SLOTS 4096 /* per owner: sessions with a rotation running or waiting
                                      * (open addressing, a power of two); full: 503 */
#define AUTH_SESSION_ASKS_MAX 1024   /* rotations a shard may have out to owners at once: past
                                      * it 503 */
#define AUTH_MSG_SESSION_ASK 0x41550005u    /* ptr = the struct auth_session_op, handed over */
#define AUTH_MSG_SESSION_ANSWER 0x41550006u /* ptr as asked, handed back with its verdict */
#define AUTH_SESSION_PARAMS 7               /* each statement's parameters */

enum auth_session_verdict {
    AUTH_SESSION_ROTATED, /* committed: user_id, lifetime_s (and client_scopes) are set */
    AUTH_SESSION_REFUSED, /* not the session's current token (reuse revoked it when it was
                           * the previous one: `reused`) */
    AUTH_SESSION_FAILED,  /* Postgres said outcome */
    AUTH_SESSION_BUSY,    /* no room on the rings or the owner's table: 503 */
    AUTH_SESSION_EXPIRED, /* still waiting when its request's backstop answered: not run */
};

struct auth_session_op {
    struct auth_wait w;          /* the owner's statements, on the owner's loop */
    /* asked (read by the owner while it holds the op) */
    const char *sid;
    const char *rotate[AUTH_SESSION_PARAMS]; /* STORE_SESSION_ROTATE's */
    const char *reuse[AUTH_SESSION_PARAMS];  /* STORE_SESSION_REUSE's */
    void (*done)(struct auth_session_op *op); /* on the asking shard, with the verdict */
    /* the owner's bookkeeping */
    struct auth_session_op *next; /* the next rotation of the same session waiting */
    uint64_t key;
    uint64_t run_by_us;           /* loop_now_us: past it, nobody waits for the answer */
    unsigned origin;
    /* answered */
    enum auth_session_verdict verdict;
    enum pg_outcome outcome;
    bool reused;
    int64_t lifetime_s;
    char user_id[CT_UUID_TEXT_LEN + 1];
    char *client_scopes; /* asked: JWT_SCOPE_MAX + 1 bytes for the client's scopes, or NULL */
};

struct auth_session_owner;
struct auth_session_owner *auth_session_owner_create(void);
void auth_session_owner_destroy(struct auth_session_owner *owner);
/* Runs op's rotation on its session's owner: op->done runs on w's shard (perhaps before this
 * returns, when the verdict comes at once). w is the asking request's wait. */
void auth_session_rotate(struct auth_wait *w, struct auth_session_op *op);
/* The messages: on the owner, and back on the asking shard. */
void auth_session_on_ask(struct auth *auth, struct loop *loop, const struct ring_msg *msg);
void auth_session_answered(struct auth *auth, struct loop *loop, const struct ring_msg *msg);

/* The caller of a grant at the token endpoint: 0 with *public_client set when a client names
 * itself by client_id without any secret (RFC 6749 §2.1 public clients, §3.2.1), else its
 * credentials checked as auth_client_credentials does; or the answer (401, 400) given. */
int auth_session_caller(struct http_ctx *ctx, struct auth_client_creds *creds, bool *public_client);

/* The password grant (RFC 6749 §4.3; DESIGN §5: first-party clients only) of the token
 * endpoint, dispatched by auth/token.c (auth/login.c): the same login as
 * /api/v1/auth/login, with §5.2's errors (invalid_grant for every refused password). */
void auth_login_password_grant(struct http_ctx *ctx, struct auth *auth,
                               struct auth_client_creds *creds, const char *username,
                               const char *password, const char *scope, bool scope_given);

/* The refresh_token grant (RFC 6749 §6) of the token endpoint, dispatched by auth/token.c
 * after the form was read: creds as the form gave them (has_id / has_secret), the presented
 * token, the scope asked for. Answers through ctx (parked or at once). */
void auth_session_refresh(struct http_ctx *ctx, struct auth *auth, struct auth_client_creds *creds,
                          const char *refresh_token, const char *scope, bool scope_given);

/* ---- The authorization code flow (auth/authorize.c, auth/code.c) ---- */

#define AUTH_LOGIN_NAME_MAX 320 /* a submitted username (128) or email (RFC 5321 §4.5.3.1) */
#define AUTH_REDIRECT_URI_MAX 2048 /* a registered redirect URI: the schema's bound */
#define AUTH_NONCE_MAX 256      /* an authorization request's nonce: the schema's bound */
#define AUTH_CODE_TTL_S 60      /* an authorization code's life (SECURITY O14; RFC 6749 §4.1.2
                                 * says at most 10 minutes; the redirect is redeemed at once) */
/* The browser session (SSO): a sessions row without client, made by the login page's login,
 * its refresh-token-shaped secret in this cookie. While it lives, an authorization request
 * is answered without the login page (unless prompt=login). Auth0's defaults: it ends after
 * 3 days unused, and 7 days after the login in any case. */
#define AUTH_SSO_COOKIE "tessera_sso"
#define AUTH_SSO_IDLE_S (3 * 86400)
#define AUTH_SSO_ABSOLUTE_S (7 * 86400)

int auth_authorize_routes(struct auth *auth, struct http_server *http);
/* The path part of TESSERA_PUBLIC_URL (maybe "") + "/t/" + slug: where a tenant's pages are
 * as the browser sees them (a cookie's Path). */
void auth_public_path(const struct auth *auth, const char *slug, struct buf *out);
/* The hosted login page for authorization request authz_id with the form's CSRF token, and
 * message (or NULL) above the form; the 303 back to the client with the code (state NULL:
 * none was sent). Every one with the browser flow's headers. */
void auth_login_page(struct http_ctx *ctx, const struct auth *auth, const char *slug, int status,
                     const char *authz_id, const char *csrf, const char *message);
void auth_login_redirect_code(struct http_ctx *ctx, const struct auth *auth, const char *slug,
                              const char *redirect_uri, const char *state, const char *code,
                              const char *sso_token);
/* Set-Cookie for the tenant's pages (Path: auth_public_path's, HttpOnly, SameSite=Lax, Secure
 * under https); max_age_s < 0: a session cookie. */
void auth_set_cookie(struct http_ctx *ctx, const struct auth *auth, const char *slug, const char *name,
                     const char *value, long max_age_s);
/* The login page's post (auth/login.c), its CSRF checked: the login of /api/v1/auth/login,
 * answering with auth_login_page (refused) or auth_login_redirect_code. The browser session
 * the request's cookie names (sso_sid "": none) is replaced by the one the login makes. */
struct auth_browser_login {
    const char *authz_id, *csrf, *username, *password;
    const char *sso_sid, *sso_sha;
};
void auth_login_browser(struct http_ctx *ctx, struct auth *auth, const struct auth_browser_login *in);

/* ---- The browser's pages (auth/authorize.c), shared with auth/logout.c ---- */

/* Every page and redirect of the browser flow: no caching, no framing, no referrer, a CSP
 * (SECURITY O40). */
void auth_page_headers(struct http_ctx *ctx);
/* A page: begun in the request's scratch with the document's head, ended with the body's
 * close, the headers and status. */
struct buf auth_page_begin(struct http_ctx *ctx);
void auth_page_end(struct http_ctx *ctx, int status, struct buf *b);
/* An error page: the browser stays here (nothing is sent to an unverified URI). */
void auth_page_error(struct http_ctx *ctx, int status, const char *message);
/* A page's parameters (RFC 6749 §3.1: GET's query, or POST's form body): false when
 * answered (415 for a body that is no form). */
bool auth_page_params(struct http_ctx *ctx, struct slice *params);
/* Text into HTML, attribute values included. */
void auth_html_escape(struct buf *b, const char *s);
/* RFC 6749 Appendix A: a browser flow's values are VSCHAR (printable ASCII). Anything else is
 * refused before it reaches a statement (a UTF-8 database refuses invalid bytes: a 500), a
 * page or a token (a control character would grow sixfold as a JSON escape). */
bool auth_vschar(const char *s, size_t len);
/* A form's opening tag posting to the tenant's page (auth_public_path + "/" + page), and a
 * hidden field (none when value is NULL). */
void auth_page_form(struct buf *b, const struct auth *auth, const char *slug, const char *page);
void auth_hidden_field(struct buf *b, const char *name, const char *value);
/* A 303 (RFC 9700 §4.12: after a POST a 307 would re-post it) to uri with the pairs (names
 * are literals, values encoded; a NULL value is left out), appended to its query if it has
 * one (RFC 6749 §3.1.2), and the tenant's iss (RFC 9207 §2) unless slug is NULL. */
void auth_page_redirect(struct http_ctx *ctx, const struct auth *auth, const char *slug, const char *uri,
                        const char *const *pairs, size_t n);
/* The value of cookie name in the request's Cookie header, or an empty slice (none, or sent
 * twice: a parent domain's host may set a second one). */
struct slice auth_page_cookie(const struct http_ctx *ctx, const char *name);
/* The browser session's id and secret digest from its cookie; false (sid "") when there is
 * none or it is not of the form auth_refresh_make gives. */
bool auth_sso_cookie(const struct http_ctx *ctx, char *sid, char *sha);
/* RFC 9700 §4.7 (SECURITY O39): the post comes from this server's own page. A browser sends
 * Origin with every cross-origin POST and Sec-Fetch-Site with every request it makes; a
 * missing one says nothing (older browsers), any other origin or site refuses; "Origin: null"
 * (what our no-referrer pages' posts carry) passes only with Sec-Fetch-Site: same-origin. */
bool auth_same_origin(const struct http_ctx *ctx, const struct auth *auth);

/* The browser's logout (auth/logout.c): the confirmation page, OIDC RP-Initiated Logout's
 * end_session_endpoint, and the post that ends the browser session with its applications'. */
int auth_browser_logout_routes(struct auth *auth, struct http_server *http);

#define AUTH_CODE_VERIFIER_MAX 128 /* RFC 7636 §4.1 */
/* The authorization_code grant (RFC 6749 §4.1.3, RFC 7636 §4.5) of the token endpoint,
 * dispatched by auth/token.c: creds as the form gave them, the code, redirect_uri and
 * code_verifier with whether each was sent. */
struct auth_code_request {
    const char *code, *redirect_uri, *verifier;
    bool redirect_given, verifier_given;
};
void auth_code_grant(struct http_ctx *ctx, struct auth *auth, struct auth_client_creds *creds,
                     const struct auth_code_request *req);

/* ---- Password reset and email verification (auth/recovery.c) ---- */

int auth_recovery_routes(struct auth *auth, struct http_server *http);

#define AUTH_MAIL_BODY_MAX (CONFIG_URL_BYTES_MAX + AUTH_SLUG_MAX + 512) /* a mail's text: a
                                          * link (public URL, slug, token) and fixed words */
/* A new one-time token of the tenant slug for a password reset (reset) or an address's
 * verification (also sign-up's, auth/register.c: one link and text for both): its hex
 * SHA-256, the only form stored (P13), into sha_hex (2 * HASH_SHA256_BYTES + 1 bytes); the
 * mail's text into body (AUTH_MAIL_BODY_MAX bytes, NUL-terminated: the link of the tenant's
 * page and the code, the token's only copy; wipe it once sent to the store); the subject and
 * the token's lifetime in seconds. 0, or -TE_IO when no random bytes could be had. */
int auth_mail_token(const struct auth *auth, const char *slug, bool reset, char *sha_hex,
                    char *body, const char **subject, int *ttl_s);

/* POST /t/{tenant}/api/v1/me/password and DELETE /t/{tenant}/api/v1/me (auth/reauth.c). */
int auth_reauth_routes(struct auth *auth, struct http_server *http);

/* ---- Personal API keys (auth/apikey.c) ---- */

#define AUTH_APIKEY_NAME_MAX 100      /* a key's name, bytes (the schema allows 200) */
#define AUTH_APIKEY_SCOPE_MAX 256     /* a key's scope, bytes: what a shard's cache entry holds */
#define AUTH_APIKEY_LIFETIME_MAX_S 315360000 /* expires_in: at most ten years */
#define AUTH_APIKEY_CACHE_SLOTS 4096  /* cached answers per shard (4-way sets): ~2.6 MiB, touched
                                       * as it fills */
#define AUTH_APIKEY_TTL_S 60          /* a cached answer is asked again after this: a change
                                       * that writes no revocation (a client's narrowed scopes)
                                       * shows within a minute. The cap on a user's keys (100
                                       * live, 1,000 made a day) is 0008's trigger's */
#define AUTH_APIKEY_USE_STEP_S 60     /* a cached key's use is noted at most this often per
                                       * shard: last_used_at is good to about a minute */
#define AUTH_APIKEY_USES_FLUSH_MS 1000 /* noted uses wait this long for their UPDATE */
#define AUTH_APIKEY_USES_MAX 1024     /* noted uses waiting per shard; more wait for next use */

/* What a live key is, as Postgres said and a shard caches it. */
struct auth_key_claims {
    char id[CT_UUID_TEXT_LEN + 1];
    char sub[CT_UUID_TEXT_LEN + 1]; /* its user */
    char client_id[AUTH_CLIENT_ID_MAX + 1];
    char tid[CT_UUID_TEXT_LEN + 1];
    char scope[AUTH_APIKEY_SCOPE_MAX + 1];
    int64_t created;
    int64_t expires; /* 0: never */
};

/* A presented key being asked of Postgres: kept in the parked request's state. */
struct auth_key_lookup {
    uint8_t digest[HASH_SHA256_BYTES];
    char sha_hex[2 * HASH_SHA256_BYTES + 1];
    char prefix[SECRET_DISPLAY_PREFIX_LEN + 1];
    uint64_t epoch; /* auth_revoked_not_before_epoch when asked */
};

enum auth_key_verdict {
    AUTH_KEY_LIVE,    /* known live on this shard: the claims are given */
    AUTH_KEY_REFUSED, /* malformed (SECURITY K02: no store query), revoked or expired */
    AUTH_KEY_ASK,     /* Postgres must say: auth_key_ask */
};

struct auth_key_cache;
struct auth_key_cache *auth_key_cache_create(void);
void auth_key_cache_destroy(struct auth_key_cache *cache);
/* The token begins with sk_: it is a key or nothing (no other kind looks like it). */
bool auth_key_prefixed(struct slice token);
/* The hot path: token as a key of tenant slug, from the shard's cache, checked against the
 * revocation set on every call; lk is filled for auth_key_ask. */
enum auth_key_verdict auth_key_check(const struct auth *auth, const struct loop *loop, const char *slug,
                                     struct slice token, struct auth_key_lookup *lk,
                                     const struct auth_key_claims **out);
/* Asks Postgres about lk's key (slug and lk in the parked state); respond as auth_send's. */
void auth_key_ask(struct http_ctx *ctx, struct auth_wait *w, struct auth_key_lookup *lk, const char *slug,
                  http_resume_fn respond);
/* In respond, with w->outcome PG_OK: the live key's claims (cached unless a not-before
 * arrived meanwhile), or NULL (refused; an audit row api_key_refused names the prefix only,
 * SECURITY K05/K07). */
const struct auth_key_claims *auth_key_answered(struct auth_wait *w, const struct auth_key_lookup *lk,
                                                const char *slug);

/* Last-use stamps (auth/apikey_uses.c): a shard's notes, written in coalesced batches. */
struct auth_key_uses;
struct auth_key_uses *auth_key_uses_create(struct auth *auth);
void auth_key_uses_destroy(struct auth_key_uses *u);
void auth_key_uses_start(struct auth_key_uses *u, struct loop *loop);
void auth_key_uses_stop(struct auth_key_uses *u);
/* Notes that tenant tid's key key_id (UUID text) was used at `at` (Unix s); false when the
 * note could not be kept (a full batch, a stopped shard). */
bool auth_key_use_note(struct auth_key_uses *u, const char *tid, const char *key_id, int64_t at);

/* POST /me/api-keys (routed by auth/session.c with the user's access token): the body's
 * members, and the key made once the token is checked (kept where the token was). */
struct auth_key_new {
    char name[AUTH_APIKEY_NAME_MAX + 1];
    char scope[AUTH_APIKEY_SCOPE_MAX + 1];
    bool scope_given;
    char lifetime[24]; /* decimal seconds; "" : never expires */
};
struct auth_key_secret {
    char key[SECRET_API_KEY_LEN + 1]; /* shown once in the answer, then wiped */
    char prefix[SECRET_DISPLAY_PREFIX_LEN + 1];
    char sha_hex[2 * HASH_SHA256_BYTES + 1];
};
/* The body: the reason it is refused, or NULL. */
const char *auth_key_new_parse(const struct http_ctx *ctx, struct auth_key_new *k);
/* With the checked token's scope: the key's scope settled (the token's when none was asked;
 * never wider) and the key made into s. 0, or the status of the refusal (400: *why says
 * why; 500: no random bytes). */
int auth_key_new_make(struct auth_key_new *k, struct auth_key_secret *s, const char *token_scope,
                      const char **why);
/* The statements of /me/api-keys with their answers, for the user's checked token. */
struct auth_key_owner {
    const char *tid, *sub, *client_id, *ip, *request_id;
};
void auth_key_create_send(struct auth_wait *w, const struct auth_key_new *k, const struct auth_key_secret *s,
                          const struct auth_key_owner *o, http_resume_fn respond);
/* 201 with the new key (respond's body; the key is wiped after), 403 for a token of a
 * client that is not first-party, 404 for a user gone, 409 at the cap. */
void auth_key_created_respond(struct http_ctx *ctx, struct auth_wait *w, const struct auth_key_new *k,
                              struct auth_key_secret *s, const char *client_id);
/* DELETE's commit: the revocation spread, then 204; 404 when no live key of the user. */
void auth_key_revoke_committed(struct auth_wait *w);

/* ---- Tenant admin endpoints (auth/admin.c, auth/audit.c) ---- */

/* Who is a tenant admin (Auth0 Management API's model): a client of the tenant holding a
 * client_credentials access token whose scope carries what the endpoint needs. */
#define AUTH_SCOPE_USERS_READ "users:read"
#define AUTH_SCOPE_USERS_WRITE "users:write"
#define AUTH_SCOPE_AUDIT_READ "audit:read"
#define AUTH_ADMIN_REQUEST_ID_MAX 64  /* the X-Request-Id kept for the audit row */
#define AUTH_ADMIN_LIMIT_DEFAULT 50   /* a page when ?limit= is absent (Auth0's per_page) */
#define AUTH_ADMIN_LIMIT_MAX 100      /* the most: a page of users or events stays ~40 KiB */
#define AUTH_ADMIN_NUM_TEXT 24        /* a decimal query value (limit, seq, Unix s) and its NUL */

struct auth_admin;
typedef void (*auth_admin_ready_fn)(struct auth_admin *admin);
/* The first member of an admin endpoint's parked state. */
struct auth_admin {
    struct auth_wait w;
    const char *scope;        /* the scope the endpoint needs (a literal) */
    const char *bad_request;  /* the endpoint's 400, answered once the token passed, or NULL */
    auth_admin_ready_fn ready;
    size_t token_len;
    char slug[AUTH_SLUG_MAX + 1];
    char tid[CT_UUID_TEXT_LEN + 1];         /* the token's tenant: set before ready runs */
    char client_id[AUTH_CLIENT_ID_MAX + 1]; /* the token's client: set before ready runs */
    char slack_text[AUTH_ADMIN_NUM_TEXT];   /* AUTH_SESSION_REVOKE_SLACK_S as text */
    char ip[AUTH_IP_MAX + 1];
    char request_id[AUTH_ADMIN_REQUEST_ID_MAX + 1];
    char token[AUTH_ACCESS_TOKEN_MAX];
};
/* An admin request's start under /t/{tenant} (params[0], route_arg the auth): 404 for a bad
 * slug, 401 (WWW-Authenticate Bearer invalid_token) without a bearer token, else the parked
 * state of `bytes` (beginning with struct auth_admin, the request's facts copied); NULL when
 * answered. The caller fills its own part, then calls auth_admin_check. */
void *auth_admin_start(struct http_ctx *ctx, size_t bytes, const char *scope);
/* The tenant's keys, then the token: valid at this tenant, of no session (a client's own,
 * never a user's: else 401 invalid_token), carrying admin->scope (else 403 with RFC 6750
 * §3.1's insufficient_scope); then admin->bad_request (400) if set; then ready(admin),
 * which sends the statement (tid, client_id set) or answers. */
void auth_admin_check(struct http_ctx *ctx, struct auth_admin *admin, auth_admin_ready_fn ready);
/* Query parameter name, decoded into dst (cap bytes with the NUL): NULL when fine (*seen
 * says whether it was given), else the reason it is refused (malformed, too long, empty). */
const char *auth_admin_query(const struct http_ctx *ctx, const char *name, char *dst, size_t cap,
                             bool *seen);
/* ?limit= as decimal text into dst (AUTH_ADMIN_NUM_TEXT): the default when absent, 1 to
 * AUTH_ADMIN_LIMIT_MAX; the reason it is refused, or NULL. */
const char *auth_admin_limit(const struct http_ctx *ctx, char *dst);

int auth_admin_routes(struct auth *auth, struct http_server *http);
int auth_audit_routes(struct auth *auth, struct http_server *http);

#endif
