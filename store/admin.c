/* store/admin.c: `tessera admin` (see admin.h).
 *
 * Contents: arguments and validation; the connection and queries; tenant; client; user;
 * keys; dispatch. Lists and results are built as JSON by Postgres itself (json_build_object),
 * so what is printed is exactly what is stored, minus the columns never shown (secret digests,
 * password hashes, sealed keys). */
#include "store/admin.h"

#include <assert.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/err.h"
#include "core/precis.h"
#include "crypto/ct.h"
#include "crypto/jwk.h"
#include "crypto/password.h"
#include "crypto/seal.h"
#include "crypto/secret.h"
#include "store/keys.h"
#include "store/migrate.h"
#include "store/purge.h"
#include "store/redis.h"
#include "store/sql.h"
#include "store/store.h"

/* Tenant slugs are a URL path segment and a DNS label's size: 1..63 (RFC 1035 §2.3.4). */
#define ADMIN_SLUG_MAX 63
/* Display names: long enough for any product name, short enough to print in a list. */
#define ADMIN_NAME_MAX 200
/* Usernames; emails per RFC 5321 §4.5.3.1 (64 local + @ + 255 domain, rounded to 320). */
#define ADMIN_USERNAME_MAX 128
#define ADMIN_EMAIL_MAX 320
/* Redirect URIs: browsers handle 2 KiB URLs everywhere. */
#define ADMIN_URI_MAX 2048
/* Repeated options (--grant, --redirect-uri, --post-logout-redirect-uri) and scope tokens per
 * client. */
#define ADMIN_LIST_MAX 32
#define ADMIN_SCOPE_TOKEN_MAX 200
/* NIST SP 800-63B §5.1.1.2: memorized secrets of at least 8 characters. */
#define ADMIN_PASSWORD_MIN 8
/* A Postgres array literal of ADMIN_LIST_MAX quoted URIs, each character possibly escaped. */
#define ADMIN_ARRAY_MAX (ADMIN_LIST_MAX * (2 * ADMIN_URI_MAX + 3) + 3)
/* Connecting to Redis, and each command, to publish a revocation: the change is committed
 * already, so a Redis away costs the CLI this long at most before the 1 s poll carries it. */
#define ADMIN_REDIS_TIMEOUT_MS 2000

/* ------------------------------------------------------------------ arguments */

enum admin_opt {
    ADMIN_OPT_TENANT = 1 << 0,
    ADMIN_OPT_NAME = 1 << 1,
    ADMIN_OPT_CLIENT_ID = 1 << 2,
    ADMIN_OPT_USERNAME = 1 << 3,
    ADMIN_OPT_EMAIL = 1 << 4,
    ADMIN_OPT_ALG = 1 << 5,
    ADMIN_OPT_SCOPE = 1 << 6,
    ADMIN_OPT_GRANT = 1 << 7,
    ADMIN_OPT_REDIRECT = 1 << 8,
    ADMIN_OPT_INTROSPECT = 1 << 9,
    ADMIN_OPT_FIRST_PARTY = 1 << 10,
    ADMIN_OPT_PASSWORD_STDIN = 1 << 11,
    ADMIN_OPT_PUBLIC = 1 << 12,
    ADMIN_OPT_LOGOUT_REDIRECT = 1 << 13,
};

struct admin_args {
    unsigned seen; /* enum admin_opt bits given */
    const char *tenant, *name, *client_id, *username, *email, *alg, *scope;
    const char *grants[ADMIN_LIST_MAX];
    int grant_count;
    const char *redirects[ADMIN_LIST_MAX];
    int redirect_count;
    const char *logout_redirects[ADMIN_LIST_MAX]; /* OIDC RP-Initiated Logout §2 */
    int logout_redirect_count;
    const char *positional; /* tenant create's slug */
};

struct admin_opt_spec {
    const char *flag;
    enum admin_opt bit;
    bool takes_value;
};

static const struct admin_opt_spec admin_opt_specs[] = {
    { "--tenant", ADMIN_OPT_TENANT, true },       { "--name", ADMIN_OPT_NAME, true },
    { "--client-id", ADMIN_OPT_CLIENT_ID, true }, { "--username", ADMIN_OPT_USERNAME, true },
    { "--email", ADMIN_OPT_EMAIL, true },         { "--alg", ADMIN_OPT_ALG, true },
    { "--scope", ADMIN_OPT_SCOPE, true },         { "--grant", ADMIN_OPT_GRANT, true },
    { "--redirect-uri", ADMIN_OPT_REDIRECT, true },
    { "--post-logout-redirect-uri", ADMIN_OPT_LOGOUT_REDIRECT, true },
    { "--introspect", ADMIN_OPT_INTROSPECT, false },
    { "--first-party", ADMIN_OPT_FIRST_PARTY, false },
    { "--public", ADMIN_OPT_PUBLIC, false },
    { "--password-stdin", ADMIN_OPT_PASSWORD_STDIN, false },
};

static int admin_usage_error(const char *fmt, const char *what)
{
    fprintf(stderr, "tessera admin: ");
    fprintf(stderr, fmt, what);
    fprintf(stderr, " (tessera admin --help)\n");
    return ADMIN_EXIT_USAGE;
}

/* Stores one option's value; repeated options only where a list is meant. */
static int admin_args_store(struct admin_args *args, const struct admin_opt_spec *spec,
                            const char *value)
{
    enum admin_opt bit = spec->bit;
    if (bit == ADMIN_OPT_GRANT || bit == ADMIN_OPT_REDIRECT || bit == ADMIN_OPT_LOGOUT_REDIRECT) {
        const char **list = bit == ADMIN_OPT_GRANT ? args->grants
                             : bit == ADMIN_OPT_REDIRECT ? args->redirects
                                                         : args->logout_redirects;
        int *count = bit == ADMIN_OPT_GRANT ? &args->grant_count
                     : bit == ADMIN_OPT_REDIRECT ? &args->redirect_count
                                                 : &args->logout_redirect_count;
        if (*count == ADMIN_LIST_MAX)
            return admin_usage_error("too many %s options", spec->flag);
        list[(*count)++] = value;
    } else if (args->seen & bit) {
        return admin_usage_error("option %s given twice", spec->flag);
    }
    args->seen |= bit;
    const char **slot[] = { &args->tenant, &args->name,  &args->client_id, &args->username,
                            &args->email,  &args->alg,   &args->scope };
    for (unsigned i = 0; i < sizeof(slot) / sizeof(slot[0]); i++) {
        if (bit == 1u << i)
            *slot[i] = value;
    }
    return 0;
}

/* Parses argv[from..argc): options in allowed, at most one positional if want_positional. */
static int admin_args_parse(int argc, char **argv, int from, unsigned allowed,
                            bool want_positional, struct admin_args *args)
{
    memset(args, 0, sizeof(*args));
    for (int i = from; i < argc; i++) {
        const struct admin_opt_spec *spec = NULL;
        for (size_t k = 0; k < sizeof(admin_opt_specs) / sizeof(admin_opt_specs[0]); k++) {
            if (strcmp(argv[i], admin_opt_specs[k].flag) == 0)
                spec = &admin_opt_specs[k];
        }
        if (spec == NULL && argv[i][0] != '-' && want_positional && args->positional == NULL) {
            args->positional = argv[i];
            continue;
        }
        if (spec == NULL || !(allowed & spec->bit))
            return admin_usage_error("unexpected argument \"%s\"", argv[i]);
        const char *value = spec->flag;
        if (spec->takes_value) {
            if (i + 1 >= argc)
                return admin_usage_error("%s needs a value", spec->flag);
            value = argv[++i];
        }
        int rc = admin_args_store(args, spec, value);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Tenant slugs: lowercase a-z 0-9 and '-', 1..63 (the issuer path segment, SECURITY T06). */
static bool admin_slug_valid(const char *slug)
{
    size_t len = strlen(slug);
    if (len == 0 || len > ADMIN_SLUG_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = slug[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
            return false;
    }
    return true;
}

/* Free text (names): 1..max bytes, no control characters. */
static bool admin_text_valid(const char *text, size_t max)
{
    size_t len = strlen(text);
    if (len == 0 || len > max)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c < 0x20 || c == 0x7f)
            return false;
    }
    return true;
}

/* Identifiers (usernames, emails): free text without spaces. */
static bool admin_word_valid(const char *text, size_t max)
{
    return admin_text_valid(text, max) && strchr(text, ' ') == NULL;
}

static bool admin_email_valid(const char *email)
{
    const char *at = strchr(email, '@');
    return admin_word_valid(email, ADMIN_EMAIL_MAX) && at != NULL && at != email &&
           at[1] != '\0' && strchr(at + 1, '@') == NULL;
}

/* RFC 6749 §3.1.2: absolute URI (RFC 3986 §4.3: scheme ":" hier-part), no fragment; printable
 * ASCII only, so it can be compared byte for byte at the authorization endpoint. http(s)
 * needs an authority; other schemes are native apps' private-use URIs (RFC 8252 §7.1), but
 * never one a browser handles itself (javascript:, data:, ...). */
static bool admin_redirect_valid(const char *uri)
{
    size_t len = strlen(uri);
    if (len == 0 || len > ADMIN_URI_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)uri[i];
        if (c <= 0x20 || c >= 0x7f || c == '#')
            return false;
    }
    size_t s = 0;
    if (!((uri[0] >= 'a' && uri[0] <= 'z') || (uri[0] >= 'A' && uri[0] <= 'Z')))
        return false;
    while (uri[s] != ':' && uri[s] != '\0') {
        char c = uri[s++];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '-' || c == '.'))
            return false;
    }
    if (uri[s] != ':' || uri[s + 1] == '\0')
        return false;
    /* Schemes that run or read in the browser instead of reaching an application: a code
     * sent there goes to script (RFC 9700 §4.1; RFC 8252 §7.1 asks for reverse-DNS names). */
    static const char *const unsafe[] = { "javascript", "data", "vbscript", "file", "blob", "about" };
    for (size_t i = 0; i < sizeof(unsafe) / sizeof(unsafe[0]); i++) {
        if (s == strlen(unsafe[i]) && strncasecmp(uri, unsafe[i], s) == 0)
            return false;
    }
    bool web = (s == 4 && strncasecmp(uri, "http", 4) == 0) ||
               (s == 5 && strncasecmp(uri, "https", 5) == 0);
    return !web || (strncmp(uri + s, "://", 3) == 0 && uri[s + 3] != '\0' && uri[s + 3] != '/');
}

/* RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ). */
static bool admin_scope_token_valid(const char *tok, size_t len)
{
    if (len == 0 || len > ADMIN_SCOPE_TOKEN_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)tok[i];
        if (c < 0x21 || c > 0x7e || c == 0x22 || c == 0x5c)
            return false;
    }
    return true;
}

static const char *const admin_grant_names[] = {
    "client_credentials", "authorization_code", "refresh_token", "password",
};

static bool admin_grant_known(const char *grant)
{
    for (size_t i = 0; i < sizeof(admin_grant_names) / sizeof(admin_grant_names[0]); i++) {
        if (strcmp(grant, admin_grant_names[i]) == 0)
            return true;
    }
    return false;
}

static bool admin_has(const char *const *list, int n, const char *item)
{
    for (int i = 0; i < n; i++) {
        if (strcmp(list[i], item) == 0)
            return true;
    }
    return false;
}

/* A Postgres array literal {"a","b"} of items, each quoted with '"' and '\' escaped. */
static void admin_pg_array(const char *const *items, int n, struct buf *out)
{
    buf_append_cstr(out, "{");
    for (int i = 0; i < n; i++) {
        buf_append_cstr(out, i > 0 ? ",\"" : "\"");
        for (const char *p = items[i]; *p != '\0'; p++) {
            if (*p == '"' || *p == '\\')
                buf_append_cstr(out, "\\");
            buf_append(out, p, 1);
        }
        buf_append_cstr(out, "\"");
    }
    buf_append_cstr(out, "}");
}

/* bytea input in hex form: \x followed by two lowercase digits a byte. */
static void admin_bytea_hex(const uint8_t *bytes, size_t len, struct buf *out)
{
    static const char digits[] = "0123456789abcdef";
    buf_append_cstr(out, "\\x");
    for (size_t i = 0; i < len; i++) {
        char pair[2] = { digits[bytes[i] >> 4], digits[bytes[i] & 15] };
        buf_append(out, pair, 2);
    }
}

/* ------------------------------------------------------------------ Postgres */

/* Connects to TESSERA_PG_URL and checks the schema is the one this binary needs. NULL with
 * *exit_code set (and a message) otherwise. */
static PGconn *admin_connect(int *exit_code)
{
    const char *url = getenv("TESSERA_PG_URL");
    if (url == NULL || url[0] == '\0') {
        fprintf(stderr, "tessera admin: TESSERA_PG_URL is not set\n");
        *exit_code = ADMIN_EXIT_USAGE;
        return NULL;
    }
    PGconn *conn = PQconnectdb(url);
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "tessera admin: cannot connect to TESSERA_PG_URL: %s",
                PQerrorMessage(conn));
        PQfinish(conn);
        *exit_code = ADMIN_EXIT_REFUSED;
        return NULL;
    }
    int version = migrate_schema_version(conn);
    if (version < migrate_required_version()) {
        fprintf(stderr, "tessera admin: the database schema is at version %d, this binary needs "
                "%d: run `tessera migrate` first\n", version, migrate_required_version());
        PQfinish(conn);
        *exit_code = ADMIN_EXIT_REFUSED;
        return NULL;
    }
    return conn;
}

static bool admin_is_unique_violation(const PGresult *res)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    return state != NULL && strcmp(state, "23505") == 0; /* unique_violation */
}

/* Runs a parameterised statement (text parameters). Returns the result when it succeeded;
 * otherwise prints the server's message unless it is a unique violation and dup_ok (the
 * caller words that one), clears the result and returns NULL, *dup telling which it was. */
static PGresult *admin_query(PGconn *conn, const char *sql, int n, const char *const *params,
                             bool *dup)
{
    PGresult *res = PQexecParams(conn, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
        return res;
    bool unique = admin_is_unique_violation(res);
    if (dup != NULL)
        *dup = unique;
    if (dup == NULL || !unique)
        fprintf(stderr, "tessera admin: database error: %s", PQerrorMessage(conn));
    PQclear(res);
    return NULL;
}

/* Prints one JSON object: {key: <json text from Postgres>} merged into base (which it
 * consumes). Returns ADMIN_EXIT_OK, or ADMIN_EXIT_REFUSED if the text is not JSON. */
static int admin_print(json_t *base, const char *key, const char *json_text)
{
    json_error_t error;
    json_t *value = json_loads(json_text, JSON_DECODE_ANY, &error);
    if (value == NULL) {
        fprintf(stderr, "tessera admin: unexpected answer from the database: %s\n", error.text);
        json_decref(base);
        return ADMIN_EXIT_REFUSED;
    }
    if (key == NULL)
        json_object_update(base, value);
    else
        json_object_set(base, key, value);
    json_decref(value);
    json_dumpf(base, stdout, JSON_COMPACT);
    fputc('\n', stdout);
    json_decref(base);
    return fflush(stdout) == 0 ? ADMIN_EXIT_OK : ADMIN_EXIT_REFUSED;
}

/* The id of the tenant named slug into id (text). ADMIN_EXIT_OK, or REFUSED with a message. */
static int admin_tenant_id(PGconn *conn, const char *slug, char id[CT_UUID_TEXT_LEN + 1])
{
    if (!admin_slug_valid(slug)) {
        fprintf(stderr, "tessera admin: unknown tenant \"%s\" (not a valid slug)\n", slug);
        return ADMIN_EXIT_REFUSED;
    }
    const char *sql = "SELECT id FROM tenants WHERE slug = $1 AND deleted_at IS NULL";
    PGresult *res = admin_query(conn, sql, 1, &slug, NULL);
    if (res == NULL)
        return ADMIN_EXIT_REFUSED;
    int rc = ADMIN_EXIT_REFUSED;
    if (PQntuples(res) == 1 && strlen(PQgetvalue(res, 0, 0)) == CT_UUID_TEXT_LEN) {
        memcpy(id, PQgetvalue(res, 0, 0), CT_UUID_TEXT_LEN + 1);
        rc = ADMIN_EXIT_OK;
    } else {
        fprintf(stderr, "tessera admin: unknown tenant \"%s\"\n", slug);
    }
    PQclear(res);
    return rc;
}

/* Runs sql (one row, one JSON column) and prints it as {"tenant": slug, key: value}. */
static int admin_query_print(PGconn *conn, const char *slug, const char *key, const char *sql,
                             int n, const char *const *params)
{
    PGresult *res = admin_query(conn, sql, n, params, NULL);
    if (res == NULL)
        return ADMIN_EXIT_REFUSED;
    int rc = ADMIN_EXIT_REFUSED;
    if (PQntuples(res) == 1) {
        json_t *base = json_object();
        if (slug != NULL)
            json_object_set_new(base, "tenant", json_string(slug));
        rc = admin_print(base, key, PQgetvalue(res, 0, 0));
    }
    PQclear(res);
    return rc;
}

/* ------------------------------------------------------------------ tenant */

static int admin_tenant_create(PGconn *conn, const struct admin_args *args)
{
    const char *slug = args->positional;
    const char *name = args->name != NULL ? args->name : slug;
    const char *params[2] = { slug, name };
    bool dup = false;
    PGresult *res = admin_query(conn,
                                "INSERT INTO tenants (slug, name) VALUES ($1, $2) RETURNING "
                                "json_build_object('id', id, 'slug', slug, 'name', name, "
                                "'created_at', created_at)",
                                2, params, &dup);
    if (res == NULL) {
        if (dup)
            fprintf(stderr, "tessera admin: tenant \"%s\" already exists\n", slug);
        return ADMIN_EXIT_REFUSED;
    }
    int rc = admin_print(json_object(), NULL, PQgetvalue(res, 0, 0));
    PQclear(res);
    return rc;
}

static int admin_tenant(PGconn *conn, const char *verb, const struct admin_args *args)
{
    if (strcmp(verb, "create") == 0)
        return admin_tenant_create(conn, args);
    return admin_query_print(conn, NULL, "tenants",
                             "SELECT coalesce(json_agg(json_build_object('id', id, 'slug', slug, "
                             "'name', name, 'created_at', created_at) ORDER BY slug), '[]') "
                             "FROM tenants WHERE deleted_at IS NULL",
                             0, NULL);
}

static int admin_tenant_check(const char *verb, const struct admin_args *args)
{
    if (strcmp(verb, "create") == 0) {
        if (args->positional == NULL)
            return admin_usage_error("tenant create needs a slug%s", "");
        if (!admin_slug_valid(args->positional))
            return admin_usage_error("invalid slug \"%s\": use 1-63 of a-z 0-9 -",
                                     args->positional);
        if (args->name != NULL && !admin_text_valid(args->name, ADMIN_NAME_MAX))
            return admin_usage_error("invalid --name \"%s\"", args->name);
    }
    return 0;
}

/* ------------------------------------------------------------------ client */

/* Splits --scope on spaces into tokens (each validated) as a Postgres array literal. */
static int admin_scopes_array(const char *scope, struct buf *out)
{
    char copy[ADMIN_LIST_MAX * (ADMIN_SCOPE_TOKEN_MAX + 1) + 1];
    const char *tokens[ADMIN_LIST_MAX];
    int n = 0;
    if (scope != NULL && strlen(scope) >= sizeof(copy))
        return admin_usage_error("--scope is too long%s", "");
    snprintf(copy, sizeof(copy), "%s", scope != NULL ? scope : "");
    char *save = NULL;
    for (char *tok = strtok_r(copy, " ", &save); tok != NULL; tok = strtok_r(NULL, " ", &save)) {
        if (!admin_scope_token_valid(tok, strlen(tok)))
            return admin_usage_error("invalid scope \"%s\" (RFC 6749 §3.3)", tok);
        if (n == ADMIN_LIST_MAX)
            return admin_usage_error("too many scopes%s", "");
        if (!admin_has(tokens, n, tok))
            tokens[n++] = tok;
    }
    admin_pg_array(tokens, n, out);
    return 0;
}

/* Each of a repeated URI option's values (flag) by admin_redirect_valid's rules. */
static int admin_uris_check(const char *const *uris, int n, const char *flag)
{
    for (int i = 0; i < n; i++) {
        if (!admin_redirect_valid(uris[i])) {
            char what[ADMIN_URI_MAX + 64];
            snprintf(what, sizeof(what), "%s \"%s\"", flag, uris[i]);
            return admin_usage_error("invalid %s: absolute, no fragment (RFC 6749 §3.1.2)", what);
        }
    }
    return 0;
}

static int admin_client_check(const struct admin_args *args)
{
    if (args->name == NULL || !admin_text_valid(args->name, ADMIN_NAME_MAX))
        return admin_usage_error("client create needs a valid --name%s", "");
    for (int i = 0; i < args->grant_count; i++) {
        if (!admin_grant_known(args->grants[i]))
            return admin_usage_error("unknown grant \"%s\"", args->grants[i]);
        if (admin_has(args->grants, i, args->grants[i]))
            return admin_usage_error("grant \"%s\" given twice", args->grants[i]);
    }
    /* Where the browser goes after a logout: the same rules (OIDC RP-Initiated Logout §3). */
    int rc = admin_uris_check(args->redirects, args->redirect_count, "--redirect-uri");
    if (rc == 0)
        rc = admin_uris_check(args->logout_redirects, args->logout_redirect_count, "--post-logout-redirect-uri");
    if (rc != 0)
        return rc;
    if (admin_has(args->grants, args->grant_count, "authorization_code") &&
        args->redirect_count == 0)
        return admin_usage_error("authorization_code needs a %s", "--redirect-uri");
    /* DESIGN §5: the password grant only for first-party clients (RFC 9700 §2.4). */
    if (admin_has(args->grants, args->grant_count, "password") &&
        !(args->seen & ADMIN_OPT_FIRST_PARTY))
        return admin_usage_error("the password grant needs %s", "--first-party");
    /* A public client (RFC 6749 §2.1: a browser or native app, which cannot keep a secret)
     * has none; a client_credentials token is a client's own, so it must have one (RFC 6749
     * §4.4; SECURITY O25). The default grant is client_credentials. */
    if ((args->seen & ADMIN_OPT_PUBLIC) &&
        (args->grant_count == 0 || admin_has(args->grants, args->grant_count, "client_credentials")))
        return admin_usage_error("a --public client may not use the client_credentials grant%s", "");
    return 0;
}

/* Inserts the client; client_id is a UUIDv7, the secret 32 random bytes shown once. */
static int admin_client_insert(PGconn *conn, const char *tenant_id, const struct admin_args *args,
                               const char *grants, const char *scopes, const char *redirects,
                               const char *logout_redirects)
{
    uint8_t digest[HASH_SHA256_BYTES];
    char client_id[CT_UUID_TEXT_LEN + 1], secret[SECRET_CLIENT_SECRET_LEN + 1];
    char digest_hex[2 + 2 * HASH_SHA256_BYTES + 1];
    if (ct_uuid7_now(client_id) != 0 || secret_client_new(secret, digest) != 0) {
        fprintf(stderr, "tessera admin: the random generator failed\n");
        return ADMIN_EXIT_REFUSED;
    }
    bool is_public = (args->seen & ADMIN_OPT_PUBLIC) != 0;
    struct buf hex;
    buf_init(&hex, digest_hex, sizeof(digest_hex));
    admin_bytea_hex(digest, sizeof(digest), &hex);
    buf_append(&hex, "", 1);
    assert(!hex.overflow);
    const char *params[] = { tenant_id, client_id, is_public ? NULL : digest_hex, args->name, grants, scopes,
                             redirects, (args->seen & ADMIN_OPT_FIRST_PARTY) ? "t" : "f",
                             (args->seen & ADMIN_OPT_INTROSPECT) ? "t" : "f", logout_redirects };
    PGresult *res = admin_query(conn,
                                "INSERT INTO clients (tenant_id, client_id, secret_sha256, name, "
                                "grants, scopes, redirect_uris, first_party, can_introspect, "
                                "post_logout_redirect_uris) "
                                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING "
                                "json_build_object('client_id', client_id, 'name', name, "
                                "'grants', grants, 'scopes', scopes, 'redirect_uris', "
                                "redirect_uris, 'post_logout_redirect_uris', post_logout_redirect_uris, "
                                "'token_lifetime_s', token_lifetime_s, "
                                "'first_party', first_party, 'can_introspect', can_introspect, "
                                "'created_at', created_at)",
                                10, params, NULL);
    if (res == NULL)
        return ADMIN_EXIT_REFUSED;
    json_t *base = json_object();
    json_object_set_new(base, "tenant", json_string(args->tenant));
    /* Shown this once; only its SHA-256 is stored (DESIGN §4). A public client has none. */
    if (!is_public)
        json_object_set_new(base, "client_secret", json_string(secret));
    explicit_bzero(secret, sizeof(secret));
    int rc = admin_print(base, NULL, PQgetvalue(res, 0, 0));
    PQclear(res);
    return rc;
}

static int admin_client_create(PGconn *conn, const char *tenant_id, const struct admin_args *args)
{
    static char grants_mem[ADMIN_ARRAY_MAX], scopes_mem[ADMIN_ARRAY_MAX],
        redirects_mem[ADMIN_ARRAY_MAX], logout_mem[ADMIN_ARRAY_MAX];
    struct buf grants, scopes, redirects, logout;
    buf_init(&grants, grants_mem, sizeof(grants_mem));
    buf_init(&scopes, scopes_mem, sizeof(scopes_mem));
    buf_init(&redirects, redirects_mem, sizeof(redirects_mem));
    buf_init(&logout, logout_mem, sizeof(logout_mem));
    static const char *const default_grant[] = { "client_credentials" };
    if (args->grant_count == 0)
        admin_pg_array(default_grant, 1, &grants);
    else
        admin_pg_array(args->grants, args->grant_count, &grants);
    int rc = admin_scopes_array(args->scope, &scopes);
    if (rc != 0)
        return rc;
    admin_pg_array(args->redirects, args->redirect_count, &redirects);
    admin_pg_array(args->logout_redirects, args->logout_redirect_count, &logout);
    buf_append(&grants, "", 1);
    buf_append(&scopes, "", 1);
    buf_append(&redirects, "", 1);
    buf_append(&logout, "", 1);
    assert(!grants.overflow && !scopes.overflow && !redirects.overflow && !logout.overflow);
    return admin_client_insert(conn, tenant_id, args, grants.data, scopes.data, redirects.data, logout.data);
}

/* A revocation committed by the CLI reaches the serving instances at once: the seq is
 * published on the events channel as a server publishes its own (DESIGN §1, step 3), and
 * every instance catches up from Postgres. Without Redis, or with Redis away, their poll
 * reads it within AUTH_REVOKED_POLL_MS (1 s): the change is committed either way. */
static void admin_publish_revoked(const char *seq)
{
    const char *url = getenv("TESSERA_REDIS_URL");
    if (url == NULL || url[0] == '\0' || seq == NULL || seq[0] == '\0')
        return;
    char message[STORE_EVENT_TEXT_MAX];
    snprintf(message, sizeof(message), "%u %s", STORE_EVENT_REVOKED, seq);
    if (redis_publish_once(url, STORE_EVENTS_CHANNEL, message, ADMIN_REDIS_TIMEOUT_MS) != 0)
        fprintf(stderr, "tessera admin: committed; Redis did not take the revocation's event, so the "
                        "servers read it by their 1 s poll\n");
}

/* Runs an UPDATE ... RETURNING json that names one row of the tenant (params: the tenant
 * id, then `key`), prints it with the tenant's slug, or says which `what` is missing. A
 * second column, when there is one, is the last seq of the revocations the statement wrote
 * (NULL: none), published for the servers. */
static int admin_update_one(PGconn *conn, const char *tenant_id, const struct admin_args *args,
                            const char *sql, const char *key, const char *what)
{
    const char *params[2] = { tenant_id, key };
    PGresult *res = admin_query(conn, sql, 2, params, NULL);
    if (res == NULL)
        return ADMIN_EXIT_REFUSED;
    int rc = ADMIN_EXIT_REFUSED;
    if (PQntuples(res) == 1 && PQnfields(res) > 1 && !PQgetisnull(res, 0, 1))
        admin_publish_revoked(PQgetvalue(res, 0, 1));
    if (PQntuples(res) == 1) {
        json_t *base = json_object();
        json_object_set_new(base, "tenant", json_string(args->tenant));
        rc = admin_print(base, NULL, PQgetvalue(res, 0, 0));
    } else {
        fprintf(stderr, "tessera admin: tenant \"%s\" has no %s \"%s\"\n", args->tenant, what, key);
    }
    PQclear(res);
    return rc;
}

/* The client and every access token issued to it end together: a 'client' revocation (the
 * serving instances hear of it at once, admin_publish_revoked) outlives the
 * longest token it could hold. Its sessions' refresh tokens die with the row (rotation needs a
 * live client). */
static int admin_client_delete(PGconn *conn, const char *tenant_id, const struct admin_args *args)
{
    return admin_update_one(conn, tenant_id, args,
                            "WITH c AS (UPDATE clients SET deleted_at = now() WHERE tenant_id = $1 AND "
                            "client_id = $2 AND deleted_at IS NULL "
                            "RETURNING tenant_id, client_id, deleted_at, token_lifetime_s), "
                            "r AS (INSERT INTO revocations (tenant_id, kind, value, expires_at) "
                            "SELECT tenant_id, 'client', client_id, now() + make_interval(secs => "
                            "token_lifetime_s + " STORE_REVOKE_SLACK_SQL ") FROM c RETURNING seq) "
                            "SELECT json_build_object('client_id', client_id, 'deleted_at', deleted_at), "
                            "(SELECT max(seq) FROM r) FROM c",
                            args->client_id, "client");
}

static int admin_client(PGconn *conn, const char *verb, const char *tenant_id,
                        const struct admin_args *args)
{
    if (strcmp(verb, "create") == 0)
        return admin_client_create(conn, tenant_id, args);
    if (strcmp(verb, "delete") == 0)
        return admin_client_delete(conn, tenant_id, args);
    return admin_query_print(conn, args->tenant, "clients",
                             "SELECT coalesce(json_agg(json_build_object('client_id', client_id, "
                             "'name', name, 'grants', grants, 'scopes', scopes, 'redirect_uris', "
                             "redirect_uris, 'post_logout_redirect_uris', post_logout_redirect_uris, "
                             "'token_lifetime_s', token_lifetime_s, 'first_party', "
                             "first_party, 'can_introspect', can_introspect, 'created_at', "
                             "created_at) ORDER BY created_at, client_id), '[]') FROM clients "
                             "WHERE tenant_id = $1 AND deleted_at IS NULL",
                             1, &tenant_id);
}

/* ------------------------------------------------------------------ user */

/* Reads the password from stdin: everything up to EOF, one trailing newline removed.
 * Returns its length, or -1 (message printed) when empty, too short or too long. */
static int admin_read_password(char *pw, size_t cap)
{
    assert(cap >= PASSWORD_INPUT_MAX + 3);
    size_t len = 0;
    while (len < cap) {
        ssize_t n = read(STDIN_FILENO, pw + len, cap - len);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    if (len > 0 && pw[len - 1] == '\n')
        len--;
    if (len > 0 && pw[len - 1] == '\r')
        len--;
    if (len > PASSWORD_INPUT_MAX || len < ADMIN_PASSWORD_MIN || memchr(pw, '\0', len) != NULL) {
        fprintf(stderr, "tessera admin: the password on stdin must be %d to %d bytes\n",
                ADMIN_PASSWORD_MIN, PASSWORD_INPUT_MAX);
        return -1;
    }
    return (int)len;
}

static int admin_user_insert(PGconn *conn, const char *tenant_id, const struct admin_args *args,
                             const char *hash)
{
    const char *params[4] = { tenant_id, args->username, args->email, hash };
    bool dup = false;
    PGresult *res = admin_query(conn,
                                "INSERT INTO users (tenant_id, username, email, password_hash) "
                                "VALUES ($1, $2, $3, $4) RETURNING json_build_object('id', id, "
                                "'username', username, 'email', email, 'disabled', disabled, "
                                "'created_at', created_at)",
                                4, params, &dup);
    if (res == NULL) {
        if (dup)
            fprintf(stderr, "tessera admin: tenant \"%s\" already has a user \"%s\"\n",
                    args->tenant, args->username);
        return ADMIN_EXIT_REFUSED;
    }
    json_t *base = json_object();
    json_object_set_new(base, "tenant", json_string(args->tenant));
    int rc = admin_print(base, NULL, PQgetvalue(res, 0, 0));
    PQclear(res);
    return rc;
}

/* The username as sign-up stores it (core/precis.h, RFC 8265 §3.3, SECURITY P06): the one
 * form login looks up. 0, or ADMIN_EXIT_USAGE with a message. */
static int admin_username_normalise(const char *username, char *out, size_t cap)
{
    size_t len = 0;
    if (precis_username(username, strlen(username), out, cap, &len) == 0)
        return 0;
    return admin_usage_error("invalid --username \"%s\": letters, digits or ASCII symbols, "
                             "no spaces (RFC 8265 §3.3)", username);
}

/* The password from stdin normalised as the server normalises it at sign-up and login
 * (RFC 8265 §4.2, SECURITY P07), then hashed into hash. 0, or an exit code (message printed). */
static int admin_password_hash(char *hash, size_t cap)
{
    static char pw[PASSWORD_INPUT_MAX + 3];
    static char norm[PASSWORD_INPUT_MAX + 1];
    static struct password_policy policy;
    size_t norm_len = 0;
    int len = admin_read_password(pw, sizeof(pw));
    int rc = len < 0 ? -TE_INVAL : precis_password(pw, (size_t)len, norm, sizeof(norm), &norm_len);
    explicit_bzero(pw, sizeof(pw));
    if (rc != 0 || norm_len < ADMIN_PASSWORD_MIN) {
        explicit_bzero(norm, sizeof(norm));
        if (len >= 0)
            fprintf(stderr, "tessera admin: the password on stdin must be valid UTF-8 without "
                            "control characters, at least %d bytes once normalised\n",
                    ADMIN_PASSWORD_MIN);
        return ADMIN_EXIT_USAGE;
    }
    /* The server's Argon2id parameters (TESSERA_ARGON2_*): a hash made here costs a login what
     * one made by the server does, and is not rehashed at its first use. */
    static struct config cfg;
    if (config_load(&cfg, stderr) != 0) {
        explicit_bzero(norm, sizeof(norm));
        return ADMIN_EXIT_USAGE;
    }
    const struct password_params params = { .m_kib = cfg.argon2_m_kib, .t = cfg.argon2_t, .p = cfg.argon2_p };
    rc = password_policy_init(&policy, &params);
    if (rc == 0)
        rc = password_hash(&policy, norm, norm_len, hash, cap);
    explicit_bzero(norm, sizeof(norm));
    if (rc < 0) {
        fprintf(stderr, "tessera admin: hashing the password failed\n");
        return ADMIN_EXIT_REFUSED;
    }
    return 0;
}

static int admin_user_create(PGconn *conn, const char *tenant_id, const struct admin_args *args)
{
    char hash[PASSWORD_HASH_MAX + 1];
    char username[ADMIN_USERNAME_MAX + 1];
    int rc = admin_username_normalise(args->username, username, sizeof(username));
    if (rc != 0)
        return rc;
    rc = admin_password_hash(hash, sizeof(hash));
    if (rc != 0)
        return rc;
    struct admin_args normal = *args;
    normal.username = username;
    rc = admin_user_insert(conn, tenant_id, &normal, hash);
    explicit_bzero(hash, sizeof(hash));
    return rc;
}

/* As the admin API's disable (SECURITY O20): the user's sessions end with the user's 'sub'
 * not-before (and recent sessions' 'sid' rows) in the same statement, so access tokens stop as
 * soon as the servers hear of it (admin_publish_revoked) and refresh tokens at once. */
static int admin_user_disable(PGconn *conn, const char *tenant_id, const struct admin_args *args)
{
    char username[ADMIN_USERNAME_MAX + 1];
    int rc = admin_username_normalise(args->username, username, sizeof(username));
    if (rc != 0)
        return rc;
    return admin_update_one(conn, tenant_id, args,
                            "WITH u AS (UPDATE users SET disabled = true WHERE tenant_id = $1 AND "
                            "lower(username) = lower($2) AND deleted_at IS NULL "
                            "RETURNING tenant_id, id, username, disabled), "
                            STORE_USER_SESSIONS_END("u", STORE_REVOKE_SLACK_SQL)
                            "n AS (SELECT count(*) AS sessions FROM s) "
                            "SELECT json_build_object('id', id, 'username', username, 'disabled', disabled, "
                            "'sessions_ended', n.sessions), "
                            "(SELECT max(seq) FROM (SELECT seq FROM r UNION ALL SELECT seq FROM nb) x) FROM u, n",
                            username, "user");
}

static int admin_user_check(const char *verb, const struct admin_args *args)
{
    if (strcmp(verb, "list") == 0)
        return 0;
    if (args->username == NULL || !admin_word_valid(args->username, ADMIN_USERNAME_MAX))
        return admin_usage_error("user %s needs a valid --username", verb);
    if (strcmp(verb, "create") != 0)
        return 0;
    if (args->email != NULL && !admin_email_valid(args->email))
        return admin_usage_error("invalid --email \"%s\"", args->email);
    if (!(args->seen & ADMIN_OPT_PASSWORD_STDIN))
        return admin_usage_error("user create needs %s (the password is never an argument)",
                                 "--password-stdin");
    return 0;
}

static int admin_user(PGconn *conn, const char *verb, const char *tenant_id,
                      const struct admin_args *args)
{
    if (strcmp(verb, "create") == 0)
        return admin_user_create(conn, tenant_id, args);
    if (strcmp(verb, "disable") == 0)
        return admin_user_disable(conn, tenant_id, args);
    return admin_query_print(conn, args->tenant, "users",
                             "SELECT coalesce(json_agg(json_build_object('id', id, 'username', "
                             "username, 'email', email, 'disabled', disabled, 'created_at', "
                             "created_at) ORDER BY lower(username)), '[]') FROM users "
                             "WHERE tenant_id = $1 AND deleted_at IS NULL",
                             1, &tenant_id);
}

/* ------------------------------------------------------------------ keys */

static const char admin_keys_list_sql[] =
    "SELECT coalesce(json_agg(json_build_object('kid', kid, 'alg', alg, 'state', state, "
    "'public_jwk', public_jwk, 'created_at', created_at, 'activated_at', activated_at, "
    "'retired_at', retired_at, 'not_after', not_after) ORDER BY created_at, kid), '[]') "
    "FROM signing_keys WHERE tenant_id = $1";

/* The rotation itself is store/keys.c's (one transaction, tenant row locked); then the list. */
static int admin_keys_rotate(PGconn *conn, const struct admin_args *args, const char *tenant_id,
                             enum jwk_alg alg, const struct seal_key *master)
{
    int rc = keys_rotate(conn, tenant_id, alg, master, KEYS_ROTATE_NOW);
    if (rc == -TE_CLOSED) {
        fprintf(stderr, "tessera admin: unknown tenant \"%s\"\n", args->tenant);
        return ADMIN_EXIT_REFUSED;
    }
    if (rc != 0) {
        fprintf(stderr, "tessera admin: rotating the keys of \"%s\" failed (see the log line "
                "above)\n", args->tenant);
        return ADMIN_EXIT_REFUSED;
    }
    return admin_query_print(conn, args->tenant, "keys", admin_keys_list_sql, 1, &tenant_id);
}

/* Algorithm and master key first: nothing is written when either is wrong. */
static int admin_keys(PGconn *conn, const char *verb, const char *tenant_id,
                      const struct admin_args *args)
{
    if (strcmp(verb, "list") == 0)
        return admin_query_print(conn, args->tenant, "keys", admin_keys_list_sql, 1, &tenant_id);
    const char *name = args->alg != NULL ? args->alg : "RS256"; /* DESIGN §4 default */
    enum jwk_alg alg = jwk_alg_parse(slice_make(name, strlen(name)));
    if (alg != JWK_ALG_RS256 && alg != JWK_ALG_ES256 && alg != JWK_ALG_EDDSA)
        return admin_usage_error("--alg must be RS256, ES256 or EdDSA, not \"%s\"", name);
    struct seal_key master;
    int rc = seal_key_load_env(ADMIN_MASTER_KEY_ID, &master);
    if (rc != 0) {
        fprintf(stderr, "tessera admin: cannot load the master key from %s (a file of 64 hex "
                "digits, mode 0600)\n", SEAL_MASTER_KEY_ENV);
        return ADMIN_EXIT_USAGE;
    }
    rc = admin_keys_rotate(conn, args, tenant_id, alg, &master);
    seal_key_wipe(&master);
    return rc;
}

/* ------------------------------------------------------------------ dispatch */

struct admin_command {
    const char *noun, *verb;
    unsigned allowed;     /* enum admin_opt bits */
    bool positional;      /* takes one positional argument */
};

static const struct admin_command admin_commands[] = {
    { "tenant", "create", ADMIN_OPT_NAME, true },
    { "tenant", "list", 0, false },
    { "client", "create",
      ADMIN_OPT_TENANT | ADMIN_OPT_NAME | ADMIN_OPT_GRANT | ADMIN_OPT_SCOPE | ADMIN_OPT_REDIRECT |
          ADMIN_OPT_LOGOUT_REDIRECT | ADMIN_OPT_INTROSPECT | ADMIN_OPT_FIRST_PARTY | ADMIN_OPT_PUBLIC,
      false },
    { "client", "list", ADMIN_OPT_TENANT, false },
    { "client", "delete", ADMIN_OPT_TENANT | ADMIN_OPT_CLIENT_ID, false },
    { "user", "create", ADMIN_OPT_TENANT | ADMIN_OPT_USERNAME | ADMIN_OPT_EMAIL |
                            ADMIN_OPT_PASSWORD_STDIN, false },
    { "user", "list", ADMIN_OPT_TENANT, false },
    { "user", "disable", ADMIN_OPT_TENANT | ADMIN_OPT_USERNAME, false },
    { "keys", "rotate", ADMIN_OPT_TENANT | ADMIN_OPT_ALG, false },
    { "keys", "list", ADMIN_OPT_TENANT, false },
    { "expired", "purge", 0, false },
};

static void admin_usage(FILE *out)
{
    fprintf(out,
            "usage: tessera admin <command>\n"
            "\n"
            "  tenant create <slug> [--name N]\n"
            "  tenant list\n"
            "  client create --tenant T --name N [--grant G]... [--scope \"a b\"]\n"
            "                [--redirect-uri U]... [--post-logout-redirect-uri U]...\n"
            "                [--introspect] [--first-party] [--public]\n"
            "  client list --tenant T\n"
            "  client delete --tenant T --client-id C\n"
            "  user create --tenant T --username U [--email E] --password-stdin\n"
            "  user list --tenant T\n"
            "  user disable --tenant T --username U\n"
            "  keys rotate --tenant T [--alg RS256|ES256|EdDSA]\n"
            "  keys list --tenant T\n"
            "  expired purge          (what the server's hourly pass deletes, now)\n"
            "\n"
            "Grants: client_credentials (default), authorization_code (needs --redirect-uri),\n"
            "refresh_token, password (needs --first-party). --public: no secret (a browser or\n"
            "native app; not with client_credentials). Talks to TESSERA_PG_URL; keys rotate\n"
            "seals private keys under TESSERA_MASTER_KEY_FILE. Prints one JSON object; a client\n"
            "secret is shown once, at creation. Exit 0 done, 1 refused, 2 bad usage.\n");
}

/* Checks arguments before any connection, so bad usage never touches the database. */
static int admin_check(const struct admin_command *cmd, const struct admin_args *args)
{
    if ((cmd->allowed & ADMIN_OPT_TENANT) && args->tenant == NULL)
        return admin_usage_error("%s needs --tenant", cmd->noun);
    if (strcmp(cmd->noun, "tenant") == 0)
        return admin_tenant_check(cmd->verb, args);
    if (strcmp(cmd->noun, "client") == 0 && strcmp(cmd->verb, "create") == 0)
        return admin_client_check(args);
    if (strcmp(cmd->noun, "client") == 0 && strcmp(cmd->verb, "delete") == 0 &&
        (args->client_id == NULL || !admin_word_valid(args->client_id, ADMIN_NAME_MAX)))
        return admin_usage_error("client delete needs a valid %s", "--client-id");
    if (strcmp(cmd->noun, "user") == 0)
        return admin_user_check(cmd->verb, args);
    return 0;
}

/* Deletes what expired (store/purge.h), audit rows past TESSERA_AUDIT_RETENTION_DAYS as the
 * server's upkeep does, and prints the rows deleted per table. */
static int admin_purge(PGconn *conn)
{
    static struct config cfg;
    if (config_load(&cfg, stderr) != 0)
        return ADMIN_EXIT_USAGE;
    long long deleted[STORE_PURGE_TABLES];
    if (store_purge_expired(conn, cfg.audit_retention_days, deleted) != 0) {
        fprintf(stderr, "tessera admin: purging failed: %s", PQerrorMessage(conn));
        return ADMIN_EXIT_REFUSED;
    }
    json_t *counts = json_object();
    for (int t = 0; t < STORE_PURGE_TABLES; t++)
        json_object_set_new(counts, store_purge_table_name((enum store_purge_table)t), json_integer(deleted[t]));
    json_t *out = json_object();
    json_object_set_new(out, "purged", counts);
    json_dumpf(out, stdout, JSON_COMPACT);
    fputc('\n', stdout);
    json_decref(out);
    return fflush(stdout) == 0 ? ADMIN_EXIT_OK : ADMIN_EXIT_REFUSED;
}

static int admin_run(PGconn *conn, const struct admin_command *cmd, const struct admin_args *args)
{
    if (strcmp(cmd->noun, "tenant") == 0)
        return admin_tenant(conn, cmd->verb, args);
    if (strcmp(cmd->noun, "expired") == 0)
        return admin_purge(conn);
    char tenant_id[CT_UUID_TEXT_LEN + 1];
    int rc = admin_tenant_id(conn, args->tenant, tenant_id);
    if (rc != ADMIN_EXIT_OK)
        return rc;
    if (strcmp(cmd->noun, "client") == 0)
        return admin_client(conn, cmd->verb, tenant_id, args);
    if (strcmp(cmd->noun, "user") == 0)
        return admin_user(conn, cmd->verb, tenant_id, args);
    assert(strcmp(cmd->noun, "keys") == 0);
    return admin_keys(conn, cmd->verb, tenant_id, args);
}

int admin_main(int argc, char **argv)
{
    assert(argc >= 2);
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            admin_usage(stdout);
            return ADMIN_EXIT_OK;
        }
    }
    const struct admin_command *cmd = NULL;
    for (size_t i = 0; argc >= 4 && i < sizeof(admin_commands) / sizeof(admin_commands[0]); i++) {
        if (strcmp(argv[2], admin_commands[i].noun) == 0 &&
            strcmp(argv[3], admin_commands[i].verb) == 0)
            cmd = &admin_commands[i];
    }
    if (cmd == NULL) {
        fprintf(stderr, "tessera admin: unknown command\n\n");
        admin_usage(stderr);
        return ADMIN_EXIT_USAGE;
    }
    struct admin_args args;
    int rc = admin_args_parse(argc, argv, 4, cmd->allowed, cmd->positional, &args);
    if (rc == 0)
        rc = admin_check(cmd, &args);
    if (rc != 0)
        return rc;
    PGconn *conn = admin_connect(&rc);
    if (conn == NULL)
        return rc;
    rc = admin_run(conn, cmd, &args);
    PQfinish(conn);
    return rc;
}
