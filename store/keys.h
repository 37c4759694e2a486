/* store/keys.h: a tenant's signing keys in Postgres (DESIGN §4, issue 4), over blocking libpq.
 *
 * A tenant has at most one active key (it signs), at most one next key (published in the JWKS
 * before it signs, so verifiers have it when it does) and any number of retired keys (published
 * until not_after, when every token they signed has expired). Private parts are sealed under the
 * master key (crypto/seal.h) bound to the owner "<tenant id>\0<kid>" (keys_owner), so a blob
 * copied to another tenant or another kid does not open (SECURITY T05).
 *
 * Used by `tessera admin keys` and by the scheduled rotator below. Everything here blocks (libpq,
 * RSA key generation): never call it on a shard loop (DESIGN §1). Functions return 0 or -TE_xxx
 * (core/err.h) and log what went wrong once, where it was decided (core/log.h); connection URLs
 * are never logged (they may carry a password). */
#ifndef TESSERA_STORE_KEYS_H
#define TESSERA_STORE_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "crypto/ct.h"
#include "crypto/jwk.h"
#include "crypto/seal.h"

/* "<uuid>\0<kid>": the longest owner binding. */
#define KEYS_OWNER_MAX (CT_UUID_TEXT_LEN + 1 + JWK_KID_MAX)
/* A sealed private JWK: the JWK plus the seal's header and tag. */
#define KEYS_SEALED_MAX (JWK_JSON_MAX + SEAL_OVERHEAD)
/* Default access token lifetime (DESIGN §4: 15 min); a retired key stays published at least
 * this long so every token it signed can still be verified. */
#define KEYS_TOKEN_LIFETIME_DEFAULT_S 900
/* RSA keys made by rotation: 2048 bits (RFC 7518 §3.3's minimum; DESIGN §4's speed figures). */
#define KEYS_RSA_BITS 2048

/* The owner binding a signing key's private part is sealed to: the tenant's id (text form),
 * a NUL, the kid. Writes it to out and returns its length, or -TE_NOMEM if cap is too small.
 * Whoever opens signing_keys.private_sealed builds the same binding. */
int keys_owner(const char *tenant_id, const char *kid, char *out, size_t cap);

/* ------------------------------------------------------------------ rotation */

/* keys_rotate's rotate_after_s for an explicit rotation: now, unconditionally. */
#define KEYS_ROTATE_NOW 0
/* keys_rotate's positive answer: not due (or another instance holds the tenant), nothing done. */
#define KEYS_ROTATE_SKIPPED 1

/* Rotates tenant_id's keys in one transaction with the tenant row locked: active -> retired
 * (not_after = now + max(KEYS_TOKEN_LIFETIME_DEFAULT_S, the longest token lifetime of the
 * tenant's clients)), next -> active (or a new active key on the first rotation), and a fresh
 * next key of alg (RS256, PS256, ES256 or EdDSA). The new keys are generated and sealed under
 * master before the transaction opens, so the lock is held for a few statements only.
 *
 * rotate_after_s KEYS_ROTATE_NOW waits for the tenant's lock and rotates. A positive value is
 * the scheduled rotation: it skips a tenant whose row another transaction holds (an instance
 * rotating it now), and, once the lock is taken, rotates only when the tenant has no active key
 * or its active key was activated more than rotate_after_s ago; so several instances never
 * rotate one tenant twice in one period.
 *
 * Returns 0 (committed), KEYS_ROTATE_SKIPPED (nothing written), -TE_INVAL (alg), -TE_CLOSED
 * (no such tenant, or deleted), -TE_IO (database; logged) or -TE_NOMEM. A crash anywhere
 * leaves the previous state: the transaction is all or nothing (SECURITY F10). */
int keys_rotate(PGconn *conn, const char *tenant_id, enum jwk_alg alg,
                const struct seal_key *master, uint32_t rotate_after_s);

/* ------------------------------------------------------------------ loading */

enum keys_state { KEYS_STATE_NEXT, KEYS_STATE_ACTIVE, KEYS_STATE_RETIRED };

/* What became of one sealed private part. */
enum keys_open {
    KEYS_OPEN_OK,
    KEYS_OPEN_TAG_FAILED, /* AES-GCM refused it: wrong master key, blob moved or altered (F14) */
    KEYS_OPEN_NO_MASTER,  /* sealed under a master key generation not given */
    KEYS_OPEN_BAD_KEY,    /* opened, but not a private JWK of the row's alg and kid */
};

struct keys_loaded {
    const char *tenant_id;
    const char *kid;
    enum jwk_alg alg;
    enum keys_state state;
    int64_t activated_at_s; /* Unix seconds; 0 for a next key */
    int64_t not_after_s;    /* retired keys: published until then; 0 otherwise */
    enum keys_open open;
    struct jwk_key *key;    /* KEYS_OPEN_OK: the private key, now the callback's (jwk_free);
                             * NULL otherwise */
};

/* Opens one sealed private part (loaded's tenant_id, kid and alg set; master_id the row's
 * master_key_id) into loaded->open and, when KEYS_OPEN_OK, loaded->key (the caller's). For
 * callers that read signing_keys themselves (the shards, through the store's statements). */
void keys_open(struct keys_loaded *loaded, uint32_t master_id, const uint8_t *blob, size_t len,
               const struct seal_key *const *masters, size_t n_masters);
/* Why a key did not open, in words for the log. */
const char *keys_open_reason(enum keys_open open);

/* Called once per key; returns 0 to go on, or a negative code that stops the load and is
 * returned by it. */
typedef int (*keys_load_fn)(void *arg, const struct keys_loaded *key);

/* Reads tenant_id's next, active and unexpired retired keys (retired ones until not_after) and
 * opens each private part with whichever of masters[0..n) sealed it, under the owner binding.
 * fn hears of every key, those that failed to open included (with why): a key is never
 * skipped silently. Returns 0 when every key opened, -TE_INVAL when at least one did not
 * (each one logged), -TE_IO (database), or fn's negative code. */
int keys_load_tenant(PGconn *conn, const char *tenant_id, const struct seal_key *const *masters,
                     size_t n_masters, keys_load_fn fn, void *arg);

/* ------------------------------------------------------------------ scheduled rotation */

/* Defaults for struct keys_rotator_config's zero values. 90 days: NIST SP 800-57 Part 1 §5.3.6
 * leaves the signing period to policy; a quarter is the common choice (and what Auth0 and
 * Keycloak operators are used to). One check an hour keeps Postgres traffic negligible. */
#define KEYS_ROTATE_AFTER_DEFAULT_S (90u * 24 * 3600)
#define KEYS_CHECK_INTERVAL_DEFAULT_S 3600u
/* Tenants rotated in one pass at most: with RSA generation (about 100 ms each) a pass stays
 * within seconds, and a backlog (a restored database, a long outage) is spread over passes. */
#define KEYS_ROTATE_PER_PASS_MAX 32

struct keys_rotator_config {
    const char *pg_url;        /* copied; never logged */
    bool purge_only;           /* the upkeep without rotating (no master key, or rotation off) */
    uint32_t audit_retention_days; /* store_purge_expired's (0: audit rows are kept) */
    uint32_t rotate_after_s;   /* an active key older than this is rotated (0: the default) */
    uint32_t check_interval_s; /* how often to look (0: the default) */
    enum jwk_alg default_alg;  /* for a tenant that has no key yet (JWK_ALG_UNSET: RS256) */
    /* Called on the rotator thread after each committed rotation; may be NULL. */
    void (*on_rotated)(void *arg, const char *tenant_id);
    void *arg;
};

struct keys_rotator;

/* Starts the rotator thread: every check_interval_s it rotates (keys_rotate, scheduled) up to
 * KEYS_ROTATE_PER_PASS_MAX tenants, not deleted, whose active key is older than
 * rotate_after_s or that have none, keeping the algorithm of each tenant's active key (unless
 * purge_only); then it purges what expired (store/purge.h), the instance's other upkeep. Safe
 * with several instances against one database. Postgres being down is logged and retried at the
 * next pass. master is copied (and wiped at stop); NULL only with purge_only. Returns 0 and
 * *out, -TE_INVAL (config) or -TE_NOMEM / -TE_IO (thread). */
int keys_rotator_start(const struct keys_rotator_config *cfg, const struct seal_key *master,
                       struct keys_rotator **out);

/* Wakes the rotator (cancelling a statement in flight), joins it and frees it. Returns within
 * a connection attempt's timeout at worst. NULL is allowed. */
void keys_rotator_stop(struct keys_rotator *r);

#endif
