/* tests/store/test_keys.c: store/keys.c against a real Postgres (TESSERA_TEST_PG_URL; skipped
 * when unset).
 *
 * Proves:
 *  - rotation states: the first rotation makes one active and one next key; the second retires
 *    the active key with not_after >= retired_at + the default token lifetime, promotes the next
 *    one and makes a new next; a scheduled rotation of a fresh key is skipped; bad tenant ids
 *    and unknown tenants are refused.
 *  - T05: sealed private parts open with their own (tenant, kid) binding only; a row of tenant B
 *    carrying A's kid and A's sealed blob does not open for B (lookup by (tenant, kid)).
 *  - F14: a wrong master key makes keys_load_tenant report every key as a tag failure (-TE_INVAL),
 *    not an empty list; a master key of another generation is reported as such.
 *  - F10: a child rotating in a loop is killed with SIGKILL at varied moments, 24 times; after
 *    each kill a fresh connection finds exactly one active key, at most one next key, every
 *    retired key published for at least the token lifetime, and every private part opening.
 *  - the rotator: two rotators (check every 1 s, rotate after 2 s) on one database give a
 *    keyless tenant its keys and rotate due keys, never twice in one period (consecutive
 *    activations of a tenant are >= 2 s apart), on_rotated once per committed rotation,
 *    deleted tenants untouched; a rotator pointed at a dead Postgres keeps running and stops.
 *    Elapsed-time bounds below are hang guards only. */
#include "store/keys.c"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "store/migrate.h"
#include "tests/store/pgtest.h"

/* Kills of a rotating child (SECURITY F10 asks for at least 20). */
#define TEST_KILLS 24
/* Rotations the rotator test waits for on one tenant: several periods. */
#define TEST_ROTATIONS_WANTED 4
/* Hang guards (seconds): far beyond what the waits need. */
#define TEST_WAIT_GUARD_S 90
#define TEST_STOP_GUARD_S 10

static struct pgtest_db test_db;

static double test_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Creates tenant slug; its id into id. */
static void test_tenant(PGconn *conn, const char *slug, char id[CT_UUID_TEXT_LEN + 1])
{
    char sql[160];
    snprintf(sql, sizeof(sql), "INSERT INTO tenants (slug, name) VALUES ('%s', '%s') RETURNING id",
             slug, slug);
    pgtest_value(conn, sql, id, CT_UUID_TEXT_LEN + 1);
    CHECK(strlen(id) == CT_UUID_TEXT_LEN);
}

/* An integer from a one-value query (-1 when it failed). */
static long test_count(PGconn *conn, const char *fmt, const char *tenant_id)
{
    char sql[1024], v[64];
    snprintf(sql, sizeof(sql), fmt, tenant_id);
    pgtest_value(conn, sql, v, sizeof(v));
    return v[0] != '\0' ? strtol(v, NULL, 10) : -1;
}

/* ------------------------------------------------------------------ loading */

struct test_load {
    int n, ok, tag_failed, no_master, bad_key, active, next, retired;
    char kids[8][JWK_KID_MAX + 1];
};

static int test_load_cb(void *arg, const struct keys_loaded *k)
{
    struct test_load *t = arg;
    if (t->n < 8)
        snprintf(t->kids[t->n], sizeof(t->kids[0]), "%s", k->kid);
    t->n++;
    t->ok += k->open == KEYS_OPEN_OK;
    t->tag_failed += k->open == KEYS_OPEN_TAG_FAILED;
    t->no_master += k->open == KEYS_OPEN_NO_MASTER;
    t->bad_key += k->open == KEYS_OPEN_BAD_KEY;
    t->active += k->state == KEYS_STATE_ACTIVE;
    t->next += k->state == KEYS_STATE_NEXT;
    t->retired += k->state == KEYS_STATE_RETIRED;
    CHECK((k->open == KEYS_OPEN_OK) == (k->key != NULL));
    if (k->key != NULL) {
        CHECK(jwk_has_private(k->key) && strcmp(jwk_kid(k->key), k->kid) == 0);
        CHECK(jwk_key_alg(k->key) == k->alg);
    }
    CHECK(k->state != KEYS_STATE_RETIRED || k->not_after_s > 0);
    jwk_free(k->key);
    return 0;
}

static int test_load(PGconn *conn, const char *tenant_id, const struct seal_key *master,
                     struct test_load *t)
{
    memset(t, 0, sizeof(*t));
    const struct seal_key *masters[1] = { master };
    return keys_load_tenant(conn, tenant_id, masters, 1, test_load_cb, t);
}

/* Opens every sealed row of tenant_id (all states) with its binding; the count that failed. */
static int test_open_all(PGconn *conn, const char *tenant_id, const struct seal_key *master)
{
    const char *params[1] = { tenant_id };
    PGresult *res = PQexecParams(conn, "SELECT kid, alg, private_sealed FROM signing_keys "
                                 "WHERE tenant_id = $1", 1, NULL, params, NULL, NULL, 1);
    int failed = PQresultStatus(res) == PGRES_TUPLES_OK ? 0 : 1;
    for (int i = 0; failed == 0 && i < PQntuples(res); i++) {
        struct keys_loaded k = { .tenant_id = tenant_id, .kid = PQgetvalue(res, i, 0) };
        const char *alg = PQgetvalue(res, i, 1);
        k.alg = jwk_alg_parse(slice_make(alg, strlen(alg)));
        const struct seal_key *masters[1] = { master };
        keys_open(&k, master->key_id, (const uint8_t *)PQgetvalue(res, i, 2),
                      (size_t)PQgetlength(res, i, 2), masters, 1);
        failed += k.open != KEYS_OPEN_OK;
        jwk_free(k.key);
    }
    PQclear(res);
    return failed;
}

/* ------------------------------------------------------------------ rotation states */

static void test_states(PGconn *conn, const struct seal_key *master, const char *a,
                        const char *b)
{
    char active1[JWK_KID_MAX + 1], next1[JWK_KID_MAX + 1], sql[512];
    CHECK(keys_rotate(conn, a, JWK_ALG_ES256, master, KEYS_ROTATE_NOW) == 0);
    CHECK(test_count(conn, "SELECT count(*) FROM signing_keys WHERE tenant_id = '%s' AND "
                     "state = 'active' AND activated_at IS NOT NULL", a) == 1);
    CHECK(test_count(conn, "SELECT count(*) FROM signing_keys WHERE tenant_id = '%s' AND "
                     "state = 'next' AND activated_at IS NULL", a) == 1);
    snprintf(sql, sizeof(sql), "SELECT kid FROM signing_keys WHERE tenant_id = '%s' AND "
             "state = 'active'", a);
    pgtest_value(conn, sql, active1, sizeof(active1));
    snprintf(sql, sizeof(sql), "SELECT kid FROM signing_keys WHERE tenant_id = '%s' AND "
             "state = 'next'", a);
    pgtest_value(conn, sql, next1, sizeof(next1));
    /* a scheduled rotation of a key activated just now is not due */
    CHECK(keys_rotate(conn, a, JWK_ALG_ES256, master, 3600) == KEYS_ROTATE_SKIPPED);
    CHECK(keys_rotate(conn, a, JWK_ALG_EDDSA, master, KEYS_ROTATE_NOW) == 0);
    snprintf(sql, sizeof(sql), "SELECT string_agg(state, ',' ORDER BY kid = '%s' DESC, kid = "
             "'%s' DESC) FROM signing_keys WHERE tenant_id = '%s'", active1, next1, a);
    char states[64];
    CHECK(strcmp(pgtest_value(conn, sql, states, sizeof(states)), "retired,active,next") == 0);
    CHECK(test_count(conn, "SELECT count(*) FROM signing_keys WHERE tenant_id = '%s' AND "
                     "state = 'retired' AND not_after >= retired_at + interval '900 s'", a) == 1);
    CHECK(test_count(conn, "SELECT count(*) FROM signing_keys WHERE tenant_id = '%s' AND "
                     "state = 'next' AND alg = 'EdDSA'", a) == 1);
    struct test_load t;
    CHECK(test_load(conn, a, master, &t) == 0);
    CHECK(t.n == 3 && t.ok == 3 && t.active == 1 && t.next == 1 && t.retired == 1);
    /* refusals */
    CHECK(keys_rotate(conn, "not-a-uuid", JWK_ALG_ES256, master, KEYS_ROTATE_NOW) == -TE_INVAL);
    CHECK(keys_rotate(conn, a, JWK_ALG_HS256, master, KEYS_ROTATE_NOW) == -TE_INVAL);
    CHECK(keys_rotate(conn, "00000000-0000-7000-8000-000000000000", JWK_ALG_ES256, master,
                      KEYS_ROTATE_NOW) == -TE_CLOSED);
    CHECK(test_count(conn, "SELECT count(*) FROM signing_keys WHERE tenant_id = '%s'", b) == 0);
}

/* T05: B gets a row with A's active kid and A's sealed blob: it does not open for B, while A's
 * own keys still do; the binding refuses another kid too. */
static void test_t05(PGconn *conn, const struct seal_key *master, const char *a, const char *b)
{
    char sql[512];
    snprintf(sql, sizeof(sql), "INSERT INTO signing_keys (tenant_id, kid, alg, state, "
             "public_jwk, private_sealed, master_key_id, activated_at) SELECT '%s', kid, alg, "
             "state, public_jwk, private_sealed, master_key_id, activated_at FROM signing_keys "
             "WHERE tenant_id = '%s' AND state = 'active'", b, a);
    CHECK(pgtest_ok(conn, sql));
    struct test_load t;
    CHECK(test_load(conn, b, master, &t) == -TE_INVAL);
    CHECK(t.n == 1 && t.tag_failed == 1 && t.ok == 0);
    CHECK(test_load(conn, a, master, &t) == 0 && t.ok == 3);
    /* A's next key's blob under A's active kid */
    snprintf(sql, sizeof(sql), "UPDATE signing_keys SET private_sealed = (SELECT private_sealed "
             "FROM signing_keys WHERE tenant_id = '%s' AND state = 'next') WHERE tenant_id = "
             "'%s'", a, b);
    CHECK(pgtest_ok(conn, sql));
    CHECK(test_load(conn, b, master, &t) == -TE_INVAL && t.tag_failed == 1);
    char owner[KEYS_OWNER_MAX];
    CHECK(keys_owner(a, "kid", owner, 10) == -TE_NOMEM);
    CHECK(keys_owner(a, "kid", owner, sizeof(owner)) == CT_UUID_TEXT_LEN + 4);
    snprintf(sql, sizeof(sql), "DELETE FROM signing_keys WHERE tenant_id = '%s'", b);
    CHECK(pgtest_ok(conn, sql));
}

/* F14: another master key of the same generation: every key reported as a tag failure. */
static void test_f14(PGconn *conn, const struct seal_key *master, const char *a)
{
    struct seal_key wrong = *master;
    wrong.bytes[0] ^= 1;
    struct test_load t;
    CHECK(test_load(conn, a, &wrong, &t) == -TE_INVAL);
    CHECK(t.n == 3 && t.tag_failed == 3 && t.ok == 0);
    wrong.key_id = master->key_id + 1;
    CHECK(test_load(conn, a, &wrong, &t) == -TE_INVAL);
    CHECK(t.n == 3 && t.no_master == 3);
    seal_key_wipe(&wrong);
}

/* ------------------------------------------------------------------ F10 */

/* The child: rotates tenant_id for ever (until SIGKILL), RSA and EC keys alternately. */
static void test_f10_child(const char *tenant_id, const struct seal_key *master)
{
    PGconn *conn = PQconnectdb(test_db.url);
    for (int i = 0; PQstatus(conn) == CONNECTION_OK; i++)
        keys_rotate(conn, tenant_id, i % 3 == 0 ? JWK_ALG_RS256 : JWK_ALG_ES256, master,
                    KEYS_ROTATE_NOW);
    _exit(1);
}

static void test_f10_invariants(const char *c, const struct seal_key *master)
{
    PGconn *conn = pgtest_connect(&test_db);
    CHECK(conn != NULL);
    if (conn == NULL)
        return;
    CHECK(test_count(conn, "SELECT count(*) FROM signing_keys WHERE tenant_id = '%s' AND "
                     "state = 'active'", c) == 1);
    CHECK(test_count(conn, "SELECT count(*) FROM signing_keys WHERE tenant_id = '%s' AND "
                     "state = 'next'", c) <= 1);
    CHECK(test_count(conn, "SELECT count(*) FROM signing_keys WHERE tenant_id = '%s' AND "
                     "state = 'retired' AND (not_after IS NULL OR not_after < retired_at + "
                     "interval '900 s')", c) == 0);
    CHECK(test_open_all(conn, c, master) == 0);
    struct test_load t;
    CHECK(test_load(conn, c, master, &t) == 0 && t.active == 1 && t.ok == t.n);
    PQfinish(conn);
}

static void test_f10(PGconn *conn, const struct seal_key *master, const char *c)
{
    CHECK(keys_rotate(conn, c, JWK_ALG_ES256, master, KEYS_ROTATE_NOW) == 0);
    long before = test_count(conn, "SELECT count(*) FROM signing_keys WHERE tenant_id = '%s'", c);
    for (int i = 0; i < TEST_KILLS; i++) {
        fflush(NULL);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0)
            test_f10_child(c, master);
        /* 0 .. ~500 ms: before connecting, during generation, inside the transaction */
        usleep((useconds_t)((i * 37 % 23) * 23000));
        kill(pid, SIGKILL);
        int status = 0;
        CHECK(waitpid(pid, &status, 0) == pid && WIFSIGNALED(status));
        test_f10_invariants(c, master);
    }
    /* the children did rotate (the kills were not all before the first commit) */
    CHECK(test_count(conn, "SELECT count(*) FROM signing_keys WHERE tenant_id = '%s'", c) >
          before);
}

/* ------------------------------------------------------------------ the rotator */

struct test_rotated {
    pthread_mutex_t mu;
    int calls;
};

static void test_on_rotated(void *arg, const char *tenant_id)
{
    struct test_rotated *t = arg;
    CHECK(strlen(tenant_id) == CT_UUID_TEXT_LEN);
    pthread_mutex_lock(&t->mu);
    t->calls++;
    pthread_mutex_unlock(&t->mu);
}

static void test_stop_guarded(struct keys_rotator *r)
{
    double start = test_now_s();
    keys_rotator_stop(r);
    CHECK(test_now_s() - start < TEST_STOP_GUARD_S); /* hang guard, not a speed claim */
}

static void test_rotator(PGconn *conn, const struct seal_key *master, const char *d,
                         const char *e)
{
    long others = test_count(conn, "SELECT count(*) FROM signing_keys WHERE tenant_id <> '%s'",
                             d);
    others -= test_count(conn, "SELECT count(*) FROM signing_keys WHERE tenant_id = '%s'", e);
    struct test_rotated rotated = { .mu = PTHREAD_MUTEX_INITIALIZER };
    struct keys_rotator_config cfg = {
        .pg_url = test_db.url, .rotate_after_s = 2, .check_interval_s = 1,
        .default_alg = JWK_ALG_EDDSA, .on_rotated = test_on_rotated, .arg = &rotated,
    };
    struct keys_rotator *r1 = NULL, *r2 = NULL;
    CHECK(keys_rotator_start(&cfg, master, &r1) == 0);
    CHECK(keys_rotator_start(&cfg, master, &r2) == 0);
    double start = test_now_s();
    while (test_now_s() - start < TEST_WAIT_GUARD_S &&
           test_count(conn, "SELECT count(*) FROM signing_keys WHERE tenant_id = '%s' AND "
                      "state = 'retired'", d) < TEST_ROTATIONS_WANTED - 1)
        usleep(200000);
    test_stop_guarded(r1);
    test_stop_guarded(r2);
    long retired_d = test_count(conn, "SELECT count(*) FROM signing_keys WHERE tenant_id = "
                                "'%s' AND state = 'retired'", d);
    long retired_e = test_count(conn, "SELECT count(*) FROM signing_keys WHERE tenant_id = "
                                "'%s' AND state = 'retired'", e);
    CHECK(retired_d >= TEST_ROTATIONS_WANTED - 1 && retired_e >= 1);
    /* d and e had no key: their first rotation retired nothing */
    CHECK(rotated.calls == (int)(retired_d + 1 + retired_e + 1));
    for (int i = 0; i < 2; i++) {
        const char *t = i == 0 ? d : e;
        CHECK(test_count(conn, "SELECT count(*) FROM signing_keys WHERE tenant_id = '%s' AND "
                         "state = 'active' AND alg = 'EdDSA'", t) == 1);
        CHECK(test_count(conn, "SELECT count(*) FROM (SELECT activated_at - lag(activated_at) "
                         "OVER (ORDER BY activated_at) AS gap FROM signing_keys WHERE "
                         "tenant_id = '%s' AND activated_at IS NOT NULL) g WHERE gap < "
                         "interval '2 s'", t) == 0);
    }
    /* deleted tenants are left alone */
    long after = test_count(conn, "SELECT count(*) FROM signing_keys WHERE tenant_id <> '%s'", d);
    after -= test_count(conn, "SELECT count(*) FROM signing_keys WHERE tenant_id = '%s'", e);
    CHECK(after == others);
}

static void test_rotator_dead_pg(const struct seal_key *master)
{
    struct test_rotated rotated = { .mu = PTHREAD_MUTEX_INITIALIZER };
    struct keys_rotator_config cfg = {
        .pg_url = "postgresql://x@127.0.0.1:1/x", .rotate_after_s = 2, .check_interval_s = 1,
        .on_rotated = test_on_rotated, .arg = &rotated,
    };
    struct keys_rotator *r = NULL;
    CHECK(keys_rotator_start(&cfg, master, &r) == 0);
    usleep(2500000); /* a few failed passes */
    test_stop_guarded(r);
    CHECK(rotated.calls == 0);
    cfg.default_alg = JWK_ALG_HS256;
    CHECK(keys_rotator_start(&cfg, master, &r) == -TE_INVAL);
    keys_rotator_stop(NULL);
}

int main(void)
{
    if (pgtest_server_url() == NULL) {
        printf("test_keys: TESSERA_TEST_PG_URL unset, skipping\n");
        return 77;
    }
    struct seal_key master = { .key_id = 1 };
    CHECK(ct_random_bytes(master.bytes, sizeof(master.bytes)) == 0);
    if (pgtest_create(&test_db, "keys") != 0)
        return 1;
    PGconn *conn = pgtest_connect(&test_db);
    int applied = 0;
    CHECK(conn != NULL && migrate_apply(conn, stderr, &applied) == 0);
    if (conn != NULL) {
        char a[CT_UUID_TEXT_LEN + 1], b[CT_UUID_TEXT_LEN + 1], c[CT_UUID_TEXT_LEN + 1];
        char d[CT_UUID_TEXT_LEN + 1], e[CT_UUID_TEXT_LEN + 1];
        test_tenant(conn, "a", a);
        test_tenant(conn, "b", b);
        test_tenant(conn, "c", c);
        test_states(conn, &master, a, b);
        test_t05(conn, &master, a, b);
        test_f14(conn, &master, a);
        test_f10(conn, &master, c);
        CHECK(pgtest_ok(conn, "UPDATE tenants SET deleted_at = now()"));
        test_tenant(conn, "d", d);
        test_tenant(conn, "e", e);
        test_rotator(conn, &master, d, e);
        test_rotator_dead_pg(&master);
        PQfinish(conn);
    }
    pgtest_drop(&test_db);
    seal_key_wipe(&master);
    return check_report("test_keys");
}
