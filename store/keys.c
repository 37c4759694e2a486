/* store/keys.c: signing keys per tenant in Postgres (see keys.h).
 *
 * Contents: statements and logging; fresh keys (generated and sealed outside any transaction);
 * rotation (one transaction, tenant row locked); loading (opening the sealed private parts);
 * the scheduled rotator thread. */
#include "store/keys.h"
#include "store/purge.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/log.h"

_Static_assert(KEYS_OWNER_MAX <= SEAL_AAD_MAX, "the owner binding fits the seal AAD");
_Static_assert(KEYS_SEALED_MAX <= SEAL_PLAINTEXT_MAX + SEAL_OVERHEAD, "a sealed JWK can be opened");

/* A rotation needs at most two fresh keys: the first one makes an active and a next key. */
#define KEYS_FRESH_MAX 2
/* Attempts of keys_rotate's transaction: the first is made with as many keys as an unlocked
 * look said were needed; if the look under the lock finds no next key after all (a concurrent
 * change), the second attempt has both keys, which is always enough. */
#define KEYS_ROTATE_ATTEMPTS_MAX 2
/* keys_rotate_tx's internal answer: the first rotation needs a second fresh key. */
#define KEYS_ROTATE_RETRY 2
/* Keys handed out by one load: a tenant rotating every few seconds for a whole token lifetime
 * stays below it; beyond it the load is refused rather than publishing part of the set. */
#define KEYS_LOAD_MAX 1024
/* A database error message as logged: Postgres's own are one line of a few hundred bytes. */
#define KEYS_ERROR_TEXT_MAX 512
/* The rotator's connection: a refused or silent Postgres costs a pass at most this long, and
 * keys_rotator_stop waits at most this long for an attempt in progress. */
#define KEYS_CONNECT_TIMEOUT_S 5
/* Its statements: a rotation is a handful of single-row statements; anything slower is stuck. */
#define KEYS_STATEMENT_TIMEOUT_MS 30000

_Static_assert(KEYS_ROTATE_SKIPPED != KEYS_ROTATE_RETRY, "two distinct positive answers");

/* ------------------------------------------------------------------ statements */

/* Logs conn's last error (one line, trailing newline cut). */
static void keys_log_db(enum log_level level, const char *msg, PGconn *conn)
{
    char text[KEYS_ERROR_TEXT_MAX];
    snprintf(text, sizeof(text), "%s", conn != NULL ? PQerrorMessage(conn) : "no connection");
    text[strcspn(text, "\n")] = '\0';
    log_msg(level, msg, "error", text, NULL);
}

/* Runs a statement: text parameters, except those formats[i] == 1 (binary, lengths[i] bytes);
 * results in result_format. The result when it succeeded, else NULL (logged). */
static PGresult *keys_exec(PGconn *conn, const char *sql, int n, const char *const *params,
                           const int *lengths, const int *formats, int result_format)
{
    PGresult *res = PQexecParams(conn, sql, n, NULL, params, lengths, formats, result_format);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
        return res;
    keys_log_db(LOG_ERROR, "signing keys: database error", conn);
    PQclear(res);
    return NULL;
}

/* A statement whose result is not needed: 0 or -TE_IO. */
static int keys_exec_ok(PGconn *conn, const char *sql, int n, const char *const *params)
{
    PGresult *res = keys_exec(conn, sql, n, params, NULL, NULL, 0);
    if (res == NULL)
        return -TE_IO;
    PQclear(res);
    return 0;
}

int keys_owner(const char *tenant_id, const char *kid, char *out, size_t cap)
{
    size_t tlen = strlen(tenant_id), klen = strlen(kid);
    if (tlen + 1 + klen > cap)
        return -TE_NOMEM;
    memcpy(out, tenant_id, tlen);
    out[tlen] = '\0'; /* the NUL keeps "ab"+"c" and "a"+"bc" apart */
    memcpy(out + tlen + 1, kid, klen);
    return (int)(tlen + 1 + klen);
}

/* ------------------------------------------------------------------ fresh keys */

/* A generated key, ready to insert: its kid, public JWK (text) and sealed private JWK. */
struct keys_fresh {
    enum jwk_alg alg;
    char kid[JWK_KID_MAX + 1];
    char public_jwk[JWK_JSON_MAX];
    uint8_t sealed[KEYS_SEALED_MAX];
    int sealed_len;
};

/* Seals key's private JWK to (tenant, kid) into fresh->sealed. */
static int keys_fresh_seal(struct keys_fresh *fresh, const struct jwk_key *key,
                           const char *tenant_id, const struct seal_key *master)
{
    char priv_mem[JWK_JSON_MAX];
    char owner[KEYS_OWNER_MAX];
    int owner_len = keys_owner(tenant_id, jwk_kid(key), owner, sizeof(owner));
    struct buf priv;
    buf_init(&priv, priv_mem, sizeof(priv_mem));
    int rc = owner_len < 0 ? owner_len : jwk_export_private(key, &priv);
    if (rc == 0) {
        rc = seal(master, slice_make(owner, (size_t)owner_len), (const uint8_t *)priv.data,
                  priv.len, fresh->sealed, sizeof(fresh->sealed));
    }
    explicit_bzero(priv_mem, sizeof(priv_mem));
    if (rc < 0)
        return rc;
    fresh->sealed_len = rc;
    return 0;
}

/* Generates a key of alg (RSA: the slow part, ~100 ms) and seals it for tenant_id. */
static int keys_fresh_make(struct keys_fresh *fresh, const char *tenant_id, enum jwk_alg alg,
                           const struct seal_key *master)
{
    struct jwk_key *key = NULL;
    struct buf pub;
    buf_init(&pub, fresh->public_jwk, sizeof(fresh->public_jwk));
    int rc = jwk_generate(alg, KEYS_RSA_BITS, &key);
    if (rc == 0)
        rc = jwk_export_public(key, &pub);
    if (rc == 0) {
        buf_append(&pub, "", 1);
        rc = pub.overflow ? -TE_NOMEM : keys_fresh_seal(fresh, key, tenant_id, master);
    }
    if (rc == 0) {
        fresh->alg = alg;
        snprintf(fresh->kid, sizeof(fresh->kid), "%s", jwk_kid(key));
    } else {
        log_msg(LOG_ERROR, "signing keys: generating or sealing a key failed", "alg",
                jwk_alg_name(alg), NULL);
    }
    jwk_free(key);
    return rc;
}

/* ------------------------------------------------------------------ rotation */

/* Locks the tenant's row for the rest of the transaction. skip_locked: a row another
 * transaction holds (an instance rotating it now) answers KEYS_ROTATE_SKIPPED at once. */
static int keys_lock_tenant(PGconn *conn, const char *tenant_id, bool skip_locked)
{
    const char *sql = skip_locked ? "SELECT 1 FROM tenants WHERE id = $1 AND deleted_at IS NULL "
                                    "FOR UPDATE SKIP LOCKED"
                                  : "SELECT 1 FROM tenants WHERE id = $1 AND deleted_at IS NULL "
                                    "FOR UPDATE";
    PGresult *res = keys_exec(conn, sql, 1, &tenant_id, NULL, NULL, 0);
    if (res == NULL)
        return -TE_IO;
    int rows = PQntuples(res);
    PQclear(res);
    if (rows == 1)
        return 0;
    return skip_locked ? KEYS_ROTATE_SKIPPED : -TE_CLOSED;
}

/* Whether the tenant has a next key, and whether a rotation is due: always for
 * KEYS_ROTATE_NOW, else when there is no active key or it was activated rotate_after_s ago.
 * Under the tenant's lock this is the recheck that keeps two instances from rotating twice. */
static int keys_state_read(PGconn *conn, const char *tenant_id, uint32_t rotate_after_s,
                           bool *has_next, bool *due)
{
    char after[16];
    snprintf(after, sizeof(after), "%" PRIu32, rotate_after_s);
    const char *params[2] = { tenant_id, after };
    PGresult *res = keys_exec(conn,
                              "SELECT count(*) FILTER (WHERE state = 'next') > 0, $2::bigint = 0 "
                              "OR coalesce(max(activated_at) FILTER (WHERE state = 'active'), "
                              "'-infinity') <= now() - make_interval(secs => $2::bigint) "
                              "FROM signing_keys WHERE tenant_id = $1",
                              2, params, NULL, NULL, 0);
    if (res == NULL)
        return -TE_IO;
    assert(PQntuples(res) == 1); /* an aggregate without GROUP BY: one row */
    *has_next = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    *due = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    PQclear(res);
    return 0;
}

/* Inserts fresh as the tenant's key in state ("active" or "next"). */
static int keys_insert(PGconn *conn, const char *tenant_id, const struct keys_fresh *fresh,
                       const char *state, const struct seal_key *master)
{
    char master_id[16];
    snprintf(master_id, sizeof(master_id), "%" PRIu32, master->key_id);
    const char *params[7] = { tenant_id,         fresh->kid,
                              jwk_alg_name(fresh->alg), state,
                              fresh->public_jwk, (const char *)fresh->sealed,
                              master_id };
    const int lengths[7] = { 0, 0, 0, 0, 0, fresh->sealed_len, 0 };
    const int formats[7] = { 0, 0, 0, 0, 0, 1, 0 }; /* the sealed blob as binary bytea */
    PGresult *res = keys_exec(conn,
                              "INSERT INTO signing_keys (tenant_id, kid, alg, state, public_jwk, "
                              "private_sealed, master_key_id, activated_at) VALUES ($1, $2, $3, "
                              "$4, $5, $6, $7, CASE WHEN $4 = 'active' THEN now() END)",
                              7, params, lengths, formats, 0);
    if (res == NULL)
        return -TE_IO;
    PQclear(res);
    return 0;
}

/* With the tenant row locked: active -> retired (published until not_after = now + the
 * longest token lifetime of the tenant's clients), next -> active (or fresh[1] as a new active
 * key on the first rotation), and fresh[0] as the new next key, so the JWKS announces a key
 * before it signs. */
static int keys_rotate_locked(PGconn *conn, const char *tenant_id, const struct keys_fresh *fresh,
                              bool has_next, const struct seal_key *master)
{
    char lifetime[16];
    snprintf(lifetime, sizeof(lifetime), "%d", KEYS_TOKEN_LIFETIME_DEFAULT_S);
    const char *params[2] = { tenant_id, lifetime };
    int rc = keys_exec_ok(conn,
                          "UPDATE signing_keys SET state = 'retired', retired_at = now(), "
                          "not_after = now() + make_interval(secs => greatest($2::int, "
                          "(SELECT coalesce(max(token_lifetime_s), 0) FROM clients WHERE "
                          "tenant_id = $1))) WHERE tenant_id = $1 AND state = 'active'",
                          2, params);
    if (rc == 0 && has_next) {
        PGresult *res = keys_exec(conn,
                                  "UPDATE signing_keys SET state = 'active', activated_at = now() "
                                  "WHERE tenant_id = $1 AND state = 'next'",
                                  1, params, NULL, NULL, 0);
        if (res == NULL)
            return -TE_IO;
        /* the row is locked and was just seen: anything but one row is a broken invariant */
        rc = strcmp(PQcmdTuples(res), "1") == 0 ? 0 : -TE_IO;
        PQclear(res);
    } else if (rc == 0) {
        rc = keys_insert(conn, tenant_id, &fresh[1], "active", master);
    }
    return rc != 0 ? rc : keys_insert(conn, tenant_id, &fresh[0], "next", master);
}

/* COMMIT when rc is 0, else ROLLBACK; rc, or -TE_IO when the commit did not happen. */
static int keys_tx_end(PGconn *conn, int rc)
{
    PGresult *res = PQexec(conn, rc == 0 ? "COMMIT" : "ROLLBACK");
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    /* COMMIT of a transaction that failed answers ROLLBACK: only "COMMIT" means committed */
    bool committed = ok && strcmp(PQcmdStatus(res), "COMMIT") == 0;
    PQclear(res);
    if (rc == 0 && !committed) {
        keys_log_db(LOG_ERROR, "signing keys: the rotation did not commit", conn);
        return -TE_IO;
    }
    return rc;
}

/* One attempt: BEGIN, lock, recheck, rotate with fresh[0..made), COMMIT. */
static int keys_rotate_tx(PGconn *conn, const char *tenant_id, const struct keys_fresh *fresh,
                          int made, const struct seal_key *master, uint32_t rotate_after_s)
{
    int rc = keys_exec_ok(conn, "BEGIN", 0, NULL);
    if (rc != 0)
        return rc;
    rc = keys_lock_tenant(conn, tenant_id, rotate_after_s != KEYS_ROTATE_NOW);
    bool has_next = false, due = false;
    if (rc == 0)
        rc = keys_state_read(conn, tenant_id, rotate_after_s, &has_next, &due);
    if (rc == 0 && !due)
        rc = KEYS_ROTATE_SKIPPED;
    if (rc == 0 && !has_next && made < KEYS_FRESH_MAX)
        rc = KEYS_ROTATE_RETRY;
    if (rc == 0)
        rc = keys_rotate_locked(conn, tenant_id, fresh, has_next, master);
    return keys_tx_end(conn, rc);
}

static bool keys_alg_signs(enum jwk_alg alg)
{
    return alg == JWK_ALG_RS256 || alg == JWK_ALG_PS256 || alg == JWK_ALG_ES256 ||
           alg == JWK_ALG_EDDSA;
}

int keys_rotate(PGconn *conn, const char *tenant_id, enum jwk_alg alg,
                const struct seal_key *master, uint32_t rotate_after_s)
{
    assert(conn != NULL);
    assert(master != NULL);
    if (strlen(tenant_id) != CT_UUID_TEXT_LEN || !keys_alg_signs(alg))
        return -TE_INVAL;
    /* an unlocked look first: how many keys to make, and nothing made when nothing is due */
    bool has_next = false, due = false;
    int rc = keys_state_read(conn, tenant_id, rotate_after_s, &has_next, &due);
    if (rc != 0 || !due)
        return rc != 0 ? rc : KEYS_ROTATE_SKIPPED;
    struct keys_fresh *fresh = calloc(KEYS_FRESH_MAX, sizeof(*fresh));
    if (fresh == NULL)
        return -TE_NOMEM;
    int made = 0, need = has_next ? 1 : KEYS_FRESH_MAX;
    for (int attempt = 0; attempt < KEYS_ROTATE_ATTEMPTS_MAX; attempt++) {
        while (rc == 0 && made < need)
            rc = keys_fresh_make(&fresh[made++], tenant_id, alg, master);
        if (rc == 0)
            rc = keys_rotate_tx(conn, tenant_id, fresh, made, master, rotate_after_s);
        if (rc != KEYS_ROTATE_RETRY)
            break;
        rc = 0;
        need = KEYS_FRESH_MAX;
    }
    assert(rc != KEYS_ROTATE_RETRY); /* the second attempt had both keys */
    explicit_bzero(fresh, KEYS_FRESH_MAX * sizeof(*fresh));
    free(fresh);
    return rc;
}

/* ------------------------------------------------------------------ loading */

static const char *const keys_state_names[] = { "next", "active", "retired" };

static const char *const keys_open_reasons[] = {
    [KEYS_OPEN_OK] = "opened",
    [KEYS_OPEN_TAG_FAILED] = "AES-GCM tag check failed: wrong master key, or the sealed blob "
                             "was moved to another tenant or kid, or altered",
    [KEYS_OPEN_NO_MASTER] = "sealed under a master key generation that was not given",
    [KEYS_OPEN_BAD_KEY] = "opened, but not a private JWK of the stored alg and kid",
};

const char *keys_open_reason(enum keys_open open)
{
    return keys_open_reasons[open];
}

void keys_open(struct keys_loaded *loaded, uint32_t master_id, const uint8_t *blob, size_t len,
               const struct seal_key *const *masters, size_t n_masters)
{
    bool known = false;
    for (size_t i = 0; i < n_masters; i++)
        known = known || masters[i]->key_id == master_id;
    loaded->open = KEYS_OPEN_NO_MASTER;
    loaded->key = NULL;
    if (!known)
        return;
    char owner[KEYS_OWNER_MAX];
    char pt[JWK_JSON_MAX];
    int owner_len = keys_owner(loaded->tenant_id, loaded->kid, owner, sizeof(owner));
    int n = owner_len < 0 ? owner_len
                          : seal_open(masters, n_masters, slice_make(owner, (size_t)owner_len),
                                      blob, len, (uint8_t *)pt, sizeof(pt));
    loaded->open = n == -TE_INVAL ? KEYS_OPEN_TAG_FAILED : KEYS_OPEN_BAD_KEY;
    struct jwk_key *key = NULL;
    if (n > 0 && loaded->alg != JWK_ALG_UNSET &&
        jwk_import(pt, (size_t)n, loaded->alg, &key) == 0 && jwk_has_private(key) &&
        strcmp(jwk_kid(key), loaded->kid) == 0) {
        loaded->open = KEYS_OPEN_OK;
        loaded->key = key;
        key = NULL;
    }
    jwk_free(key);
    explicit_bzero(pt, sizeof(pt));
}

static enum keys_state keys_state_parse(const char *text)
{
    for (size_t i = 0; i < sizeof(keys_state_names) / sizeof(keys_state_names[0]); i++) {
        if (strcmp(text, keys_state_names[i]) == 0)
            return (enum keys_state)i;
    }
    return KEYS_STATE_RETIRED; /* the table's CHECK allows nothing else */
}

/* One row of keys_load_tenant's query (binary results: text columns are their bytes followed
 * by a NUL, private_sealed its raw bytes) to fn. *failed counts keys that did not open. */
static int keys_load_row(const PGresult *res, int row, const char *tenant_id,
                         const struct seal_key *const *masters, size_t n_masters,
                         keys_load_fn fn, void *arg, int *failed)
{
    const char *alg = PQgetvalue(res, row, 1);
    struct keys_loaded loaded = {
        .tenant_id = tenant_id,
        .kid = PQgetvalue(res, row, 0),
        .alg = jwk_alg_parse(slice_make(alg, strlen(alg))),
        .state = keys_state_parse(PQgetvalue(res, row, 2)),
        .activated_at_s = strtoll(PQgetvalue(res, row, 3), NULL, 10),
        .not_after_s = strtoll(PQgetvalue(res, row, 4), NULL, 10),
    };
    uint32_t master_id = (uint32_t)strtoul(PQgetvalue(res, row, 5), NULL, 10);
    keys_open(&loaded, master_id, (const uint8_t *)PQgetvalue(res, row, 6),
                  (size_t)PQgetlength(res, row, 6), masters, n_masters);
    if (loaded.open != KEYS_OPEN_OK) {
        (*failed)++;
        log_msg(LOG_ERROR, "signing keys: a sealed private key does not open", "tenant_id",
                tenant_id, "kid", loaded.kid, "state", keys_state_names[loaded.state], "reason",
                keys_open_reasons[loaded.open], NULL);
    }
    return fn(arg, &loaded);
}

int keys_load_tenant(PGconn *conn, const char *tenant_id, const struct seal_key *const *masters,
                     size_t n_masters, keys_load_fn fn, void *arg)
{
    assert(conn != NULL);
    assert(fn != NULL);
    if (strlen(tenant_id) != CT_UUID_TEXT_LEN)
        return -TE_INVAL;
    char limit[16];
    snprintf(limit, sizeof(limit), "%d", KEYS_LOAD_MAX + 1);
    const char *params[2] = { tenant_id, limit };
    PGresult *res = keys_exec(conn,
                              "SELECT kid, alg, state, coalesce(extract(epoch FROM activated_at)"
                              "::bigint, 0)::text, coalesce(extract(epoch FROM not_after)"
                              "::bigint, 0)::text, master_key_id::text, private_sealed "
                              "FROM signing_keys WHERE tenant_id = $1 AND (state <> 'retired' "
                              "OR not_after > now()) ORDER BY created_at, kid LIMIT $2::int",
                              2, params, NULL, NULL, 1);
    if (res == NULL)
        return -TE_IO;
    int rows = PQntuples(res), failed = 0, rc = 0;
    if (rows > KEYS_LOAD_MAX) {
        log_msg(LOG_ERROR, "signing keys: the tenant has too many published keys to load",
                "tenant_id", tenant_id, NULL);
        rc = -TE_FULL;
    }
    for (int row = 0; rc == 0 && row < rows; row++)
        rc = keys_load_row(res, row, tenant_id, masters, n_masters, fn, arg, &failed);
    PQclear(res);
    return rc == 0 && failed > 0 ? -TE_INVAL : rc;
}

/* ------------------------------------------------------------------ scheduled rotation */

struct keys_rotator {
    char *pg_url;
    bool purge_only;
    uint32_t audit_retention_days;
    uint32_t rotate_after_s, check_interval_s;
    enum jwk_alg default_alg;
    void (*on_rotated)(void *arg, const char *tenant_id);
    void *arg;
    struct seal_key master;
    pthread_t thread;
    pthread_mutex_t mu;  /* guards stopping and cancel */
    pthread_cond_t cond; /* CLOCK_MONOTONIC: signalled by keys_rotator_stop */
    bool stopping;
    PGcancel *cancel;    /* of conn, so stop can interrupt a statement */
    PGconn *conn;        /* the rotator thread's only */
};

/* A tenant a pass rotates, and the algorithm of its newest key. */
struct keys_candidate {
    char tenant_id[CT_UUID_TEXT_LEN + 1];
    enum jwk_alg alg;
};

static bool keys_rotator_stopping(struct keys_rotator *r)
{
    pthread_mutex_lock(&r->mu);
    bool stopping = r->stopping;
    pthread_mutex_unlock(&r->mu);
    return stopping;
}

static void keys_rotator_disconnect(struct keys_rotator *r)
{
    pthread_mutex_lock(&r->mu);
    if (r->cancel != NULL)
        PQfreeCancel(r->cancel);
    r->cancel = NULL;
    pthread_mutex_unlock(&r->mu);
    PQfinish(r->conn);
    r->conn = NULL;
}

/* A working connection, made anew when there is none or it broke. 0 or -TE_IO (logged; the
 * next pass tries again). The URL goes to libpq only, never to the log. */
static int keys_rotator_connect(struct keys_rotator *r)
{
    if (r->conn != NULL && PQstatus(r->conn) == CONNECTION_OK)
        return 0;
    if (r->conn != NULL)
        keys_rotator_disconnect(r);
    char timeout[16];
    snprintf(timeout, sizeof(timeout), "%d", KEYS_CONNECT_TIMEOUT_S);
    /* connect_timeout after dbname: it overrides one the URL may carry, so stop stays bounded */
    const char *const keywords[] = { "dbname", "connect_timeout", NULL };
    const char *const values[] = { r->pg_url, timeout, NULL };
    PGconn *conn = PQconnectdbParams(keywords, values, 1);
    if (PQstatus(conn) != CONNECTION_OK) {
        keys_log_db(LOG_WARN, "key rotation: cannot reach Postgres, retrying at the next pass",
                    conn);
        PQfinish(conn);
        return -TE_IO;
    }
    char sql[64];
    snprintf(sql, sizeof(sql), "SET statement_timeout = %d", KEYS_STATEMENT_TIMEOUT_MS);
    if (keys_exec_ok(conn, sql, 0, NULL) != 0) {
        PQfinish(conn);
        return -TE_IO;
    }
    r->conn = conn;
    pthread_mutex_lock(&r->mu);
    r->cancel = PQgetCancel(conn);
    pthread_mutex_unlock(&r->mu);
    return 0;
}

/* Tenants due, most overdue first, with the newest key's algorithm (the next key's: an
 * operator's `keys rotate --alg` choice survives the schedule). Count, or -TE_IO. */
static int keys_rotator_candidates(struct keys_rotator *r, struct keys_candidate *out)
{
    char after[16], limit[16];
    snprintf(after, sizeof(after), "%" PRIu32, r->rotate_after_s);
    snprintf(limit, sizeof(limit), "%d", KEYS_ROTATE_PER_PASS_MAX);
    const char *params[2] = { after, limit };
    PGresult *res = keys_exec(r->conn,
                              "SELECT t.id, coalesce(n.alg, a.alg, '') FROM tenants t "
                              "LEFT JOIN signing_keys a ON a.tenant_id = t.id AND a.state = "
                              "'active' LEFT JOIN signing_keys n ON n.tenant_id = t.id AND "
                              "n.state = 'next' WHERE t.deleted_at IS NULL AND "
                              "coalesce(a.activated_at, '-infinity') <= now() - "
                              "make_interval(secs => $1::bigint) ORDER BY a.activated_at "
                              "NULLS FIRST, t.id LIMIT $2::int",
                              2, params, NULL, NULL, 0);
    if (res == NULL)
        return -TE_IO;
    int rows = PQntuples(res);
    assert(rows <= KEYS_ROTATE_PER_PASS_MAX);
    for (int i = 0; i < rows; i++) {
        const char *alg = PQgetvalue(res, i, 1);
        snprintf(out[i].tenant_id, sizeof(out[i].tenant_id), "%s", PQgetvalue(res, i, 0));
        out[i].alg = jwk_alg_parse(slice_make(alg, strlen(alg)));
        if (!keys_alg_signs(out[i].alg))
            out[i].alg = r->default_alg;
    }
    PQclear(res);
    return rows;
}

/* The instance's other upkeep, on the same thread and connection: what expired is deleted
 * (store/purge.h), and what was is logged. */
static void keys_rotator_purge(struct keys_rotator *r)
{
    long long deleted[STORE_PURGE_TABLES];
    if (store_purge_expired(r->conn, r->audit_retention_days, deleted) != 0)
        return; /* logged; the next pass tries again */
    for (int t = 0; t < STORE_PURGE_TABLES; t++) {
        if (deleted[t] == 0)
            continue;
        char n[24];
        snprintf(n, sizeof(n), "%lld", deleted[t]);
        log_msg(LOG_INFO, "purged expired rows", "table", store_purge_table_name((enum store_purge_table)t),
                "rows", n, NULL);
    }
}

/* One pass: connect if needed, rotate each due tenant (stopping early when asked to), then
 * purge what expired. */
static void keys_rotator_pass(struct keys_rotator *r)
{
    struct keys_candidate due[KEYS_ROTATE_PER_PASS_MAX];
    int n = keys_rotator_connect(r);
    if (n == 0 && !r->purge_only)
        n = keys_rotator_candidates(r, due);
    for (int i = 0; i < n && !keys_rotator_stopping(r); i++) {
        int rc = keys_rotate(r->conn, due[i].tenant_id, due[i].alg, &r->master,
                             r->rotate_after_s);
        if (rc == 0) {
            log_msg(LOG_INFO, "key rotation: rotated", "tenant_id", due[i].tenant_id, "alg",
                    jwk_alg_name(due[i].alg), NULL);
            if (r->on_rotated != NULL)
                r->on_rotated(r->arg, due[i].tenant_id);
        }
        if (rc < 0 && PQstatus(r->conn) != CONNECTION_OK)
            break;
    }
    if (n >= 0 && !keys_rotator_stopping(r) && PQstatus(r->conn) == CONNECTION_OK)
        keys_rotator_purge(r);
    if (r->conn != NULL && PQstatus(r->conn) != CONNECTION_OK)
        keys_rotator_disconnect(r); /* the next pass reconnects */
}

/* Sleeps check_interval_s, or until keys_rotator_stop. */
static void keys_rotator_wait(struct keys_rotator *r)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += r->check_interval_s;
    pthread_mutex_lock(&r->mu);
    while (!r->stopping) {
        if (pthread_cond_timedwait(&r->cond, &r->mu, &deadline) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&r->mu);
}

static void *keys_rotator_main(void *arg)
{
    struct keys_rotator *r = arg;
    log_thread_init(-1, false);
    while (!keys_rotator_stopping(r)) {
        keys_rotator_pass(r);
        keys_rotator_wait(r);
    }
    if (r->conn != NULL)
        keys_rotator_disconnect(r);
    return NULL;
}

static void keys_rotator_free(struct keys_rotator *r)
{
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->mu);
    seal_key_wipe(&r->master);
    free(r->pg_url);
    free(r);
}

/* The thread is made with every signal blocked: signals are the main thread's business. */
static int keys_rotator_spawn(struct keys_rotator *r)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&r->thread, NULL, keys_rotator_main, r);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc == 0 ? 0 : -TE_IO;
}

int keys_rotator_start(const struct keys_rotator_config *cfg, const struct seal_key *master,
                       struct keys_rotator **out)
{
    assert(cfg != NULL && (master != NULL || cfg->purge_only) && out != NULL);
    enum jwk_alg alg = cfg->default_alg == JWK_ALG_UNSET ? JWK_ALG_RS256 : cfg->default_alg;
    if (cfg->pg_url == NULL || !keys_alg_signs(alg))
        return -TE_INVAL;
    struct keys_rotator *r = calloc(1, sizeof(*r));
    if (r == NULL || (r->pg_url = strdup(cfg->pg_url)) == NULL) {
        free(r);
        return -TE_NOMEM;
    }
    r->rotate_after_s = cfg->rotate_after_s ? cfg->rotate_after_s : KEYS_ROTATE_AFTER_DEFAULT_S;
    r->check_interval_s =
        cfg->check_interval_s ? cfg->check_interval_s : KEYS_CHECK_INTERVAL_DEFAULT_S;
    r->default_alg = alg;
    r->on_rotated = cfg->on_rotated;
    r->arg = cfg->arg;
    r->purge_only = cfg->purge_only;
    r->audit_retention_days = cfg->audit_retention_days;
    if (master != NULL)
        r->master = *master;
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cond, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&r->mu, NULL);
    int rc = keys_rotator_spawn(r);
    if (rc != 0) {
        keys_rotator_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

void keys_rotator_stop(struct keys_rotator *r)
{
    if (r == NULL)
        return;
    char why[256];
    pthread_mutex_lock(&r->mu);
    r->stopping = true;
    if (r->cancel != NULL)
        PQcancel(r->cancel, why, sizeof(why)); /* best effort: a statement in flight ends now */
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL);
    keys_rotator_free(r);
}
