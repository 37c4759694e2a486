/* tests/store/test_admin.c: store/admin.c in process against a real Postgres.
 *
 * Proves: T08, tenant isolation of the admin queries: two tenants with a same-named client
 * each list only their own, and a client_id of tenant A cannot be deleted through tenant B;
 * a client secret is stored only as its SHA-256 and never listed; a sealed private key opens
 * only with its own tenant id and kid as the owner binding (and gives back the key whose kid
 * it is stored under), never with another tenant's id or another kid (T05); key rotation moves
 * next -> active -> retired with not_after covering the longest token lifetime; and the usage
 * and refusal exit codes (bad slug, unknown tenant, bad grant, fragment in a redirect URI,
 * password grant without --first-party, HS256 rotation, missing or unreachable database). */
#include "store/admin.c"

#include <stdarg.h>
#include <sys/stat.h>

#include "tests/store/pgtest.h"

/* Longest admin command line a test builds. */
#define TEST_ARGS_MAX 16

/* Runs `tessera admin ...` with stdout captured; returns the exit status and the printed
 * JSON (NULL if none). The argument list ends with NULL. */
static int test_admin(json_t **out, ...)
{
    char *argv[TEST_ARGS_MAX] = { "tessera", "admin" };
    int argc = 2;
    va_list ap;
    va_start(ap, out);
    for (char *arg = va_arg(ap, char *); arg != NULL; arg = va_arg(ap, char *)) {
        assert(argc < TEST_ARGS_MAX - 1);
        argv[argc++] = arg;
    }
    va_end(ap);
    fflush(stdout);
    FILE *tmp = tmpfile();
    assert(tmp != NULL);
    int saved = dup(STDOUT_FILENO);
    dup2(fileno(tmp), STDOUT_FILENO);
    int rc = admin_main(argc, argv);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    rewind(tmp);
    json_error_t error;
    json_t *json = json_loadf(tmp, 0, &error);
    fclose(tmp);
    if (out != NULL)
        *out = json;
    else
        json_decref(json);
    return rc;
}

static const char *test_str(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s != NULL ? s : "";
}

/* client create in tenant slug; the client_id and secret copied out. */
static void test_client_create(const char *slug, char *client_id, char *secret)
{
    json_t *out = NULL;
    CHECK(test_admin(&out, "client", "create", "--tenant", slug, "--name", "web", "--scope",
                     "read write", NULL) == 0);
    snprintf(client_id, CT_UUID_TEXT_LEN + 1, "%s", test_str(out, "client_id"));
    snprintf(secret, SECRET_CLIENT_SECRET_LEN + 1, "%s", test_str(out, "client_secret"));
    CHECK(strlen(secret) == SECRET_CLIENT_SECRET_LEN);
    json_decref(out);
}

/* client list of slug: exactly one client, the one expected, and no secret of any kind. */
static void test_client_list_only(const char *slug, const char *client_id, const char *secret)
{
    json_t *out = NULL;
    CHECK(test_admin(&out, "client", "list", "--tenant", slug, NULL) == 0);
    json_t *clients = json_object_get(out, "clients");
    CHECK(json_array_size(clients) == 1);
    CHECK(strcmp(test_str(json_array_get(clients, 0), "client_id"), client_id) == 0);
    char *text = json_dumps(out, JSON_COMPACT);
    CHECK(text != NULL && strstr(text, "secret") == NULL && strstr(text, secret) == NULL);
    free(text);
    json_decref(out);
}

static void test_clients(PGconn *conn)
{
    char id_a[CT_UUID_TEXT_LEN + 1], id_b[CT_UUID_TEXT_LEN + 1];
    char secret_a[SECRET_CLIENT_SECRET_LEN + 1], secret_b[SECRET_CLIENT_SECRET_LEN + 1];
    test_client_create("a", id_a, secret_a);
    test_client_create("b", id_b, secret_b);
    CHECK(strcmp(id_a, id_b) != 0 && strcmp(secret_a, secret_b) != 0);
    test_client_list_only("a", id_a, secret_a);
    test_client_list_only("b", id_b, secret_b);
    /* stored: the digest of the secret, and the secret nowhere */
    uint8_t digest[HASH_SHA256_BYTES];
    char want[2 * HASH_SHA256_BYTES + 1], got[128], sql[256];
    CHECK(hash_sha256(secret_a, strlen(secret_a), digest) == 0);
    for (size_t i = 0; i < sizeof(digest); i++)
        snprintf(want + 2 * i, 3, "%02x", digest[i]);
    snprintf(sql, sizeof(sql), "SELECT encode(secret_sha256, 'hex') FROM clients WHERE "
             "client_id = '%s'", id_a);
    CHECK(strcmp(pgtest_value(conn, sql, got, sizeof(got)), want) == 0);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM clients c WHERE row_to_json(c)::text "
             "LIKE '%%%s%%'", secret_a);
    CHECK(strcmp(pgtest_value(conn, sql, got, sizeof(got)), "0") == 0);
    /* T08: tenant b cannot delete tenant a's client */
    CHECK(test_admin(NULL, "client", "delete", "--tenant", "b", "--client-id", id_a, NULL) ==
          ADMIN_EXIT_REFUSED);
    test_client_list_only("a", id_a, secret_a);
    CHECK(test_admin(NULL, "client", "delete", "--tenant", "a", "--client-id", id_a, NULL) == 0);
    CHECK(test_admin(NULL, "client", "delete", "--tenant", "a", "--client-id", id_a, NULL) ==
          ADMIN_EXIT_REFUSED);
    test_client_list_only("b", id_b, secret_b);
}

/* The (tenant id, kid, sealed blob) of slug's key in state into the buffers; 0 when found. */
static int test_key_row(PGconn *conn, const char *slug, const char *state, char *tenant_id,
                        char *kid, uint8_t *blob, size_t *blob_len)
{
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT t.id, k.kid, encode(k.private_sealed, 'hex') FROM "
             "signing_keys k JOIN tenants t ON t.id = k.tenant_id WHERE t.slug = '%s' AND "
             "k.state = '%s'", slug, state);
    PGresult *res = PQexec(conn, sql);
    int rc = -1;
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        snprintf(tenant_id, CT_UUID_TEXT_LEN + 1, "%s", PQgetvalue(res, 0, 0));
        snprintf(kid, JWK_KID_MAX + 1, "%s", PQgetvalue(res, 0, 1));
        const char *hex = PQgetvalue(res, 0, 2);
        *blob_len = strlen(hex) / 2;
        assert(*blob_len <= KEYS_SEALED_MAX);
        for (size_t i = 0; i < *blob_len; i++)
            sscanf(hex + 2 * i, "%2hhx", &blob[i]);
        rc = 0;
    }
    PQclear(res);
    return rc;
}

/* Opens blob with owner (tenant_id, kid); returns the plaintext length or the error. */
static int test_open(const struct seal_key *master, const char *tenant_id, const char *kid,
                     const uint8_t *blob, size_t len, uint8_t *out, size_t cap)
{
    char owner[KEYS_OWNER_MAX];
    int owner_len = keys_owner(tenant_id, kid, owner, sizeof(owner));
    const struct seal_key *keys[1] = { master };
    return seal_open(keys, 1, slice_make(owner, (size_t)owner_len), blob, len, out, cap);
}

static void test_sealed(PGconn *conn, const struct seal_key *master)
{
    static uint8_t blob_a[KEYS_SEALED_MAX], blob_b[KEYS_SEALED_MAX], pt[KEYS_SEALED_MAX];
    char tenant_a[CT_UUID_TEXT_LEN + 1], tenant_b[CT_UUID_TEXT_LEN + 1];
    char kid_a[JWK_KID_MAX + 1], kid_b[JWK_KID_MAX + 1];
    size_t len_a = 0, len_b = 0;
    CHECK(test_key_row(conn, "a", "active", tenant_a, kid_a, blob_a, &len_a) == 0);
    CHECK(test_key_row(conn, "b", "active", tenant_b, kid_b, blob_b, &len_b) == 0);
    int n = test_open(master, tenant_a, kid_a, blob_a, len_a, pt, sizeof(pt));
    CHECK(n > 0);
    struct jwk_key *key = NULL;
    CHECK(n > 0 && jwk_import((const char *)pt, (size_t)n, JWK_ALG_UNSET, &key) == 0);
    CHECK(key != NULL && jwk_has_private(key) && strcmp(jwk_kid(key), kid_a) == 0);
    jwk_free(key);
    CHECK(test_open(master, tenant_b, kid_a, blob_a, len_a, pt, sizeof(pt)) == -TE_INVAL);
    CHECK(test_open(master, tenant_a, kid_b, blob_a, len_a, pt, sizeof(pt)) == -TE_INVAL);
    CHECK(test_open(master, tenant_a, kid_a, blob_b, len_b, pt, sizeof(pt)) == -TE_INVAL);
    CHECK(test_open(master, tenant_b, kid_b, blob_b, len_b, pt, sizeof(pt)) > 0);
}

static void test_keys(PGconn *conn, const struct seal_key *master)
{
    json_t *out = NULL;
    char v[64];
    CHECK(test_admin(NULL, "keys", "rotate", "--tenant", "a", NULL) == 0);
    CHECK(test_admin(NULL, "keys", "rotate", "--tenant", "b", "--alg", "EdDSA", NULL) == 0);
    test_sealed(conn, master);
    CHECK(strcmp(pgtest_value(conn, "SELECT string_agg(state, ',' ORDER BY state) FROM "
                              "signing_keys k JOIN tenants t ON t.id = k.tenant_id WHERE "
                              "t.slug = 'a'", v, sizeof(v)), "active,next") == 0);
    char next_kid[JWK_KID_MAX + 1], active_kid[JWK_KID_MAX + 1];
    pgtest_value(conn, "SELECT kid FROM signing_keys k JOIN tenants t ON t.id = k.tenant_id "
                 "WHERE t.slug = 'a' AND state = 'next'", next_kid, sizeof(next_kid));
    pgtest_value(conn, "SELECT kid FROM signing_keys k JOIN tenants t ON t.id = k.tenant_id "
                 "WHERE t.slug = 'a' AND state = 'active'", active_kid, sizeof(active_kid));
    CHECK(test_admin(&out, "keys", "rotate", "--tenant", "a", "--alg", "ES256", NULL) == 0);
    json_t *keys = json_object_get(out, "keys");
    CHECK(json_array_size(keys) == 3);
    for (size_t i = 0; i < json_array_size(keys); i++) {
        json_t *k = json_array_get(keys, i);
        const char *kid = test_str(k, "kid"), *state = test_str(k, "state");
        CHECK(strcmp(kid, next_kid) != 0 || strcmp(state, "active") == 0);
        CHECK(strcmp(kid, active_kid) != 0 || strcmp(state, "retired") == 0);
        CHECK(json_object_get(json_object_get(k, "public_jwk"), "d") == NULL);
        CHECK(json_object_get(k, "private_sealed") == NULL);
    }
    json_decref(out);
    /* the retired key stays published for at least the default token lifetime */
    CHECK(strcmp(pgtest_value(conn, "SELECT not_after - retired_at >= interval '900 s' FROM "
                              "signing_keys WHERE state = 'retired'", v, sizeof(v)), "t") == 0);
    CHECK(strcmp(pgtest_value(conn, "SELECT count(*) FROM signing_keys k JOIN tenants t ON "
                              "t.id = k.tenant_id WHERE t.slug = 'b'", v, sizeof(v)), "2") == 0);
    CHECK(test_admin(NULL, "keys", "rotate", "--tenant", "a", "--alg", "HS256", NULL) ==
          ADMIN_EXIT_USAGE);
    CHECK(test_admin(NULL, "keys", "rotate", "--tenant", "zz", NULL) == ADMIN_EXIT_REFUSED);
}

static void test_usage(void)
{
    CHECK(test_admin(NULL, "tenant", "create", "Bad_Slug", NULL) == ADMIN_EXIT_USAGE);
    CHECK(test_admin(NULL, "tenant", "create", "a", NULL) == ADMIN_EXIT_REFUSED);
    CHECK(test_admin(NULL, "client", "list", "--tenant", "nope", NULL) == ADMIN_EXIT_REFUSED);
    CHECK(test_admin(NULL, "client", "list", NULL) == ADMIN_EXIT_USAGE);
    CHECK(test_admin(NULL, "client", "create", "--tenant", "a", "--name", "x", "--grant",
                     "implicit", NULL) == ADMIN_EXIT_USAGE);
    CHECK(test_admin(NULL, "client", "create", "--tenant", "a", "--name", "x", "--grant",
                     "password", NULL) == ADMIN_EXIT_USAGE);
    CHECK(test_admin(NULL, "client", "create", "--tenant", "a", "--name", "x", "--grant",
                     "authorization_code", "--redirect-uri", "https://x.example/cb#f",
                     NULL) == ADMIN_EXIT_USAGE);
    CHECK(test_admin(NULL, "client", "create", "--tenant", "a", "--name", "x", "--grant",
                     "authorization_code", "--redirect-uri", "/relative", NULL) ==
          ADMIN_EXIT_USAGE);
    CHECK(test_admin(NULL, "client", "create", "--tenant", "a", "--name", "x", "--scope",
                     "a\"b", NULL) == ADMIN_EXIT_USAGE);
    CHECK(test_admin(NULL, "frobnicate", "now", NULL) == ADMIN_EXIT_USAGE);
    CHECK(test_admin(NULL, "tenant", "list", "--bogus", NULL) == ADMIN_EXIT_USAGE);
}

/* A 0600 master key file of 64 hex digits; its path in TESSERA_MASTER_KEY_FILE. */
static int test_master_key(char *path, size_t cap, struct seal_key *master)
{
    uint8_t raw[SEAL_KEY_BYTES];
    snprintf(path, cap, "/tmp/tessera_test_admin_%ld.key", (long)getpid());
    FILE *f = fopen(path, "w");
    if (f == NULL || ct_random_bytes(raw, sizeof(raw)) != 0)
        return -1;
    chmod(path, 0600);
    for (size_t i = 0; i < sizeof(raw); i++)
        fprintf(f, "%02x", raw[i]);
    fclose(f);
    setenv(SEAL_MASTER_KEY_ENV, path, 1);
    return seal_key_load(path, ADMIN_MASTER_KEY_ID, master);
}

int main(void)
{
    if (pgtest_server_url() == NULL) {
        printf("test_admin: TESSERA_TEST_PG_URL unset, skipping\n");
        return 77;
    }
    char key_path[128];
    struct seal_key master;
    struct pgtest_db db;
    CHECK(test_master_key(key_path, sizeof(key_path), &master) == 0);
    unsetenv("TESSERA_PG_URL");
    CHECK(test_admin(NULL, "tenant", "list", NULL) == ADMIN_EXIT_USAGE);
    if (pgtest_create(&db, "admin") != 0)
        return 1;
    setenv("TESSERA_PG_URL", db.url, 1);
    /* an empty database is refused until migrated */
    CHECK(test_admin(NULL, "tenant", "list", NULL) == ADMIN_EXIT_REFUSED);
    PGconn *conn = pgtest_connect(&db);
    int applied = 0;
    CHECK(conn != NULL && migrate_apply(conn, stderr, &applied) == 0);
    CHECK(test_admin(NULL, "tenant", "create", "a", NULL) == 0);
    CHECK(test_admin(NULL, "tenant", "create", "b", "--name", "Tenant B", NULL) == 0);
    if (conn != NULL) {
        test_clients(conn);
        test_keys(conn, &master);
        test_usage();
        PQfinish(conn);
    }
    pgtest_drop(&db);
    /* a database that does not answer: refused, not bad usage */
    setenv("TESSERA_PG_URL", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2", 1);
    CHECK(test_admin(NULL, "tenant", "list", NULL) == ADMIN_EXIT_REFUSED);
    unlink(key_path);
    seal_key_wipe(&master);
    return check_report("test_admin");
}
